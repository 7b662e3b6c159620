//! Prints N distinct random well-formed API tokens, one a line, made by the crate's own
//! `api_token::generate()` (`pcs_` + 43 base62 + a 6-character base62 CRC-32): tokens that
//! pass every format check and that no store has ever issued. Bench-only, for the flood test
//! (`make flood`): anyone can make these, since the checksum is public.
//!
//! `cargo run --release --example gen_api_tokens -- 10000 > tokens.txt`

use std::collections::HashSet;
use std::io::Write as _;

use anyhow::Context as _;
use portcullis::identity::api_token;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "10000".to_owned())
        .parse()
        .context("the argument is how many tokens to print")?;
    let mut seen = HashSet::with_capacity(n);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while seen.len() < n {
        let token = api_token::generate();
        api_token::check_format(&token).context("generate() made a malformed token")?;
        if seen.insert(token.clone()) {
            writeln!(out, "{token}")?;
        }
    }
    out.flush()?;
    Ok(())
}
