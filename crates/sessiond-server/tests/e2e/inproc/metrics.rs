//! `/metrics` stays bounded whatever clients send: labels come from fixed sets (hardening, issue
//! "what an attacker finds": 200 random methods used to add 200 series).

use reqwest::Method;

use sessiond_server::dto::KindParam;

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

/// The verified-token cache's series: hits and misses as access tokens are validated, its size,
/// and `[caches.verified_tokens]` turning it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verified_token_cache_is_measured_and_can_be_turned_off() {
    let series = |text: &str, name: &str| -> u64 {
        let prefix = format!("{name}{{cache=\"verified_tokens\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .parse()
            .unwrap()
    };
    for (config, on) in [
        (String::new(), true),
        (
            String::from("[caches.verified_tokens]\nentries = 0\n"),
            false,
        ),
    ] {
        let s = spawn_app(Options {
            config,
            ..Options::default()
        })
        .await;
        let created = s.create_session("carol", KindParam::Tokens).await;
        let access = created.tokens.unwrap().access_token;
        for _ in 0..3 {
            s.validate_access_token(&access).await.unwrap();
        }
        let text = s.get("/metrics").await.text;
        let (hits, misses) = (
            series(&text, "sessiond_cache_hits_total"),
            series(&text, "sessiond_cache_misses_total"),
        );
        assert_eq!(series(&text, "sessiond_cache_evictions_total"), 0);
        if on {
            assert_eq!((hits, misses), (2, 1), "{text}");
            assert_eq!(series(&text, "sessiond_cache_entries"), 1);
            assert!(series(&text, "sessiond_cache_bytes") > 0);
        } else {
            // Off: not consulted at all.
            assert_eq!((hits, misses), (0, 0), "{text}");
            assert_eq!(series(&text, "sessiond_cache_entries"), 0);
        }
        // The API-key cache is measured too (the bootstrap key never reaches it).
        assert!(
            text.contains("sessiond_cache_misses_total{cache=\"api_keys\"} 0"),
            "{text}"
        );
        s.stop().await;
    }
}

/// The SQLite row cache's series (`cache="session_rows"`): a cookie validated three times is
/// read once and then answered from memory; `[caches.session_rows]` at zero turns it off and its
/// series are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_row_cache_is_measured_and_can_be_turned_off() {
    let series = |text: &str, name: &str| -> Option<u64> {
        let prefix = format!("{name}{{cache=\"session_rows\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.parse().unwrap())
    };
    for (config, on) in [
        (String::new(), true),
        (String::from("[caches.session_rows]\nentries = 0\n"), false),
    ] {
        let s = spawn_app(Options {
            config,
            ..Options::default()
        })
        .await;
        let created = s.create_session("dave", KindParam::Cookie).await;
        let cookie = created.cookie.unwrap();
        for _ in 0..3 {
            s.validate_cookie(&cookie).await.unwrap();
        }
        let text = s.get("/metrics").await.text;
        if on {
            let hits = series(&text, "sessiond_cache_hits_total").unwrap();
            assert!(hits >= 1, "{text}");
            assert!(
                series(&text, "sessiond_cache_entries").unwrap() >= 1,
                "{text}"
            );
            assert!(series(&text, "sessiond_cache_bytes").unwrap() > 0, "{text}");
        } else {
            assert_eq!(series(&text, "sessiond_cache_hits_total"), None, "{text}");
        }
        s.stop().await;
    }
}
