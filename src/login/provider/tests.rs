use super::*;

#[test]
fn max_age_is_read_from_cache_control() {
    assert_eq!(
        parse_max_age("public, max-age=21600, must-revalidate"),
        Some(Duration::from_secs(21600))
    );
    assert_eq!(parse_max_age("no-store"), None);
}

#[test]
fn unknown_kids_are_bounded() {
    let mut unknown = HashMap::new();
    let now = Instant::now();
    for i in 0..(MAX_UNKNOWN_KIDS + 50) {
        remember_unknown(&mut unknown, &format!("kid-{i}"), now);
    }
    assert_eq!(unknown.len(), MAX_UNKNOWN_KIDS);
}

#[tokio::test]
async fn fetches_are_https_only_except_loopback_and_bounded_in_size() {
    let http = http_client(Duration::from_secs(5)).expect("client");
    for insecure in [
        "http://accounts.example.com/jwks",
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
    ] {
        assert!(
            matches!(
                fetch(&http, insecure, None).await,
                Err(ProviderError::InsecureUrl(_))
            ),
            "{insecure}"
        );
    }
    // A loopback server answering more than the limit, and one within it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route(
            "/big",
            axum::routing::get(|| async { "x".repeat(MAX_DOCUMENT_BYTES + 1) }),
        )
        .route(
            "/small",
            axum::routing::get(|| async { ([("cache-control", "max-age=600")], "{\"keys\":[]}") }),
        )
        .route(
            "/moved",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "/small")],
                    String::new(),
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let big = fetch(&http, &format!("http://{addr}/big"), None).await;
    assert!(
        matches!(big, Err(ProviderError::TooLarge { .. })),
        "{big:?}"
    );
    let (body, max_age) = fetch(&http, &format!("http://{addr}/small"), None)
        .await
        .expect("small");
    assert_eq!(body, b"{\"keys\":[]}");
    assert_eq!(max_age, Some(Duration::from_secs(600)));
    let moved = fetch(&http, &format!("http://{addr}/moved"), None).await;
    assert!(
        matches!(moved, Err(ProviderError::Status { status: 302, .. })),
        "redirects are not followed: {moved:?}"
    );
}

/// ProviderKeys on a loopback JWKS server that counts its hits.
async fn keys_served(body: String) -> (Arc<ProviderKeys>, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.clone();
            async move { ([("cache-control", "max-age=600")], body) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let keys = Arc::new(ProviderKeys::new(
        format!("http://{addr}/jwks"),
        http_client(Duration::from_secs(5)).expect("client"),
        Duration::from_secs(3600),
    ));
    (keys, hits)
}

#[tokio::test]
async fn keys_are_refreshed_in_the_background_and_then_known() {
    let pem = include_bytes!("../../../tests/data/keys/rs256.pub.pem");
    let published =
        crate::identity::publish::publish(jsonwebtoken::Algorithm::RS256, pem).expect("jwk");
    let body = serde_json::json!({"keys": [published.jwk]}).to_string();
    let (keys, hits) = keys_served(body).await;
    assert!(!ProviderKeys::has(&keys.current(), &published.kid));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        keys.clone()
            .refresh_in_background(Duration::from_millis(1), stop_rx),
    );
    for _ in 0..500 {
        if ProviderKeys::has(&keys.current(), &published.kid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ProviderKeys::has(&keys.current(), &published.kid));
    // The next refresh waits for most of max-age (600 s): no second fetch now, and a
    // known kid costs none.
    let set = keys.keys_for(Some(&published.kid)).await;
    assert!(ProviderKeys::has(&set, &published.kid));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let _ = stop_tx.send(true);
    task.await.expect("stops");
}

#[tokio::test]
async fn an_unknown_kid_fetches_once_per_cooldown_and_concurrent_asks_share_it() {
    let (keys, hits) = keys_served("{\"keys\":[]}".to_owned()).await;
    let asks: Vec<_> = (0..20)
        .map(|i| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.keys_for(Some(&format!("kid-{i}"))).await })
        })
        .collect();
    for a in asks {
        a.await.expect("ask");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(keys.fetch_count(), 1);
}

#[test]
fn a_remembered_kid_is_not_renewed_by_asking_again() {
    let mut unknown = HashMap::new();
    let first = Instant::now();
    remember_unknown(&mut unknown, "k", first);
    remember_unknown(&mut unknown, "k", first + Duration::from_secs(5));
    assert_eq!(unknown["k"], first);
}
