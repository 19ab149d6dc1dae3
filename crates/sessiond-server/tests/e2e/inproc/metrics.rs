//! `/metrics` stays bounded whatever clients send: labels come from fixed sets (hardening, issue
//! "what an attacker finds": 200 random methods used to add 200 series).

use reqwest::Method;

use super::{spawn_app, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let s = spawn_app(Options::default()).await;
    // Scrape twice so the scrape's own series exists in `before`.
    s.request(Method::GET, "/metrics", None, &[], false).await;
    let before = s
        .request(Method::GET, "/metrics", None, &[], false)
        .await
        .text;
    for i in 0..200 {
        let method = Method::from_bytes(format!("X{i:03}RANDOM").as_bytes()).unwrap();
        let path = format!("/no/such/route/{i}");
        let r = s.request(method.clone(), &path, None, &[], false).await;
        assert!(r.status.is_client_error(), "{}", r.status);
        s.request(method, "/healthz", None, &[], false).await;
    }
    let after = s
        .request(Method::GET, "/metrics", None, &[], false)
        .await
        .text;
    assert!(
        !after.contains("RANDOM"),
        "a client-chosen method became a label"
    );
    assert!(
        !after.contains("/no/such/route"),
        "a raw path became a label"
    );
    assert!(after.contains("method=\"other\""), "{after}");
    // 400 requests, each with its own method, half to their own path: a handful of request
    // series ((route, method, status) from fixed sets), not hundreds.
    let requests = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("sessiond_http_requests_total{"))
            .count()
    };
    assert!(
        requests(&after) <= requests(&before) + 4,
        "{} request series before, {} after:\n{after}",
        requests(&before),
        requests(&after)
    );
    s.stop().await;
}
