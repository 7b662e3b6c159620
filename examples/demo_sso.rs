//! `make demo-sso`: the browser test's stack, left running for a person. The OpenID provider
//! (the test `oidc-provider`, any account name signs in), portcullis with its login issuer,
//! the shipped TLS Envoy and two app hosts; prints the URLs and the Chromium command line with
//! the resolver rules, then runs until Ctrl-C. Certificates are made at start, never saved.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use support::sso::{chromium_args, SsoStack, CHROMIUM};

#[tokio::main]
async fn main() {
    // Tokens live 2 minutes and are renewed in their last minute, so renewal can be watched.
    let stack = SsoStack::start(120, 60).await;
    let flags: Vec<String> = chromium_args(&stack.spki)
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => format!("--{k}='{v}'"),
            None => format!("--{a}"),
        })
        .collect();
    let app1 = stack.origin("app1");
    let app2 = stack.origin("app2");
    println!();
    println!("Single sign-on demo: portcullis behind Envoy with TLS, two apps, one login.");
    println!("  app1:      {app1}/");
    println!("  app2:      {app2}/");
    println!("  login:     {}/auth/login", stack.origin("login"));
    println!(
        "  provider:  {} (sign in as 'ada' or 'grace', any password)",
        stack.provider.issuer
    );
    println!(
        "  evil:      http://evil.test:{}/ (a cross-site form posting to app1)",
        stack.evil.port()
    );
    println!(
        "  sibling:   {}/ (same site, not allow-listed: its POST gets 403 csrf)",
        stack.origin("evil")
    );
    println!();
    println!(
        "Open it in Chromium (the hosts resolve to loopback, the test certificate is trusted):"
    );
    println!(
        "  {CHROMIUM} --user-data-dir=$(mktemp -d) {} {app1}/",
        flags.join(" ")
    );
    println!();
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await.expect("ctrl-c");
    stack.server.stop().await;
}
