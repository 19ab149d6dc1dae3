//! Trusted issuers with a JWK Set in a file, in process. (The URL-fetched ones, whose fetches
//! are checked in the log, run in the process suite.)

use serde_json::{json, Map};

use super::{spawn_app_in, Options};
use crate::issuers::{idp_key, jwk, token, IDP};

#[tokio::test]
async fn jwks_file_relative_to_the_config() {
    let a = idp_key(3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("idp.json"),
        json!({"keys": [jwk(&a, "k1")]}).to_string(),
    )
    .unwrap();
    let s = spawn_app_in(dir, Options { config: format!("[[issuers]]\nissuer = \"{IDP}\"\naudience = \"sessiond\"\njwks_file = \"idp.json\"\n"), ..Options::default() }).await;
    let r = s
        .post("/v1/claims", json!({"token": token(&a, "k1", "file-1")}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let wrong_aud = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = json!({"iss": IDP, "aud": "other", "jti": "z", "exp": now + 60});
        let mut header = Map::new();
        header.insert("kid".into(), json!("k1"));
        sessiond::jose::sign_compact(&a, &header, &serde_json::to_vec(&claims).unwrap())
            .unwrap()
            .expose()
            .clone()
    };
    s.post("/v1/claims", json!({"token": wrong_aud}))
        .await
        .assert_problem(401, "invalid_credential");
    s.stop().await;
}
