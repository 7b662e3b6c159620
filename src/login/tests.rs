use super::*;

fn id(email: Option<&str>, verified: bool, hd: Option<&str>) -> VerifiedIdToken {
    VerifiedIdToken {
        subject: "1".to_owned(),
        email: email.map(str::to_owned),
        email_verified: verified,
        name: None,
        hd: hd.map(str::to_owned),
    }
}

#[test]
fn account_rules_are_checked_on_the_claims() {
    let open = AccountRules::default();
    assert_eq!(
        check_account(&open, &id(Some("Ada@Example.com"), true, None)),
        Ok("ada@example.com".to_owned())
    );
    assert_eq!(
        check_account(&open, &id(Some("ada@example.com"), false, None)),
        Err(Refusal::EmailNotVerified)
    );
    assert_eq!(
        check_account(&open, &id(None, true, None)),
        Err(Refusal::EmailNotVerified)
    );
    let hd = AccountRules {
        hosted_domain: Some("example.com".to_owned()),
        email_domains: Vec::new(),
    };
    assert!(check_account(&hd, &id(Some("a@example.com"), true, Some("example.com"))).is_ok());
    assert_eq!(
        check_account(&hd, &id(Some("a@example.com"), true, Some("other.com"))),
        Err(Refusal::WrongHostedDomain)
    );
    assert_eq!(
        check_account(&hd, &id(Some("a@example.com"), true, None)),
        Err(Refusal::WrongHostedDomain),
        "a missing hd claim is not the domain"
    );
    let domains = AccountRules {
        hosted_domain: None,
        email_domains: vec!["example.com".to_owned()],
    };
    assert!(check_account(&domains, &id(Some("a@example.com"), true, None)).is_ok());
    for other in ["a@evil.com", "a@example.com.evil.com", "a@sub.example.com"] {
        assert_eq!(
            check_account(&domains, &id(Some(other), true, None)),
            Err(Refusal::EmailDomainNotAllowed),
            "{other}"
        );
    }
}
