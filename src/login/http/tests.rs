use super::signin::constant_time_eq;
use super::*;

#[test]
fn the_jwt_cookie_is_secure_http_only_lax_on_the_parent_domain_and_cleared_alike() {
    let cfg = crate::config::CookieConfig {
        domain: Some("example.com".to_owned()),
        secure: true,
        max_age: None,
    };
    let lifetime = std::time::Duration::from_secs(3600);
    let set = cookie_for("jwt-token", &cfg, lifetime, "v".to_owned(), false).to_string();
    let mut attributes: Vec<&str> = set.split("; ").collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        [
            "Domain=example.com",
            "HttpOnly",
            "Max-Age=3600",
            "Path=/",
            "SameSite=Lax",
            "Secure",
            "jwt-token=v"
        ]
    );
    let cleared = cookie_for("jwt-token", &cfg, lifetime, String::new(), true).to_string();
    let mut attributes: Vec<&str> = cleared.split("; ").collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        [
            "Domain=example.com",
            "HttpOnly",
            "Max-Age=0",
            "Path=/",
            "SameSite=Lax",
            "Secure",
            "jwt-token="
        ]
    );
}

#[test]
fn state_comparison_is_exact() {
    assert!(constant_time_eq("abc", "abc"));
    assert!(!constant_time_eq("abc", "abd"));
    assert!(!constant_time_eq("abc", "abcd"));
    assert!(!constant_time_eq("", "a"));
}
