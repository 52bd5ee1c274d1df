//! Redacted request headers never reach the disk, and do not affect matching.

use crate::support::client::{one_shot, test_request, Client};
use crate::support::upstream::Upstream;
use crate::support::{
    config_toml, contains, files_under, read_recording, start_proxy_with, stop_proxy, TempDir,
};
use ouli_core::proxy::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_headers_never_reach_disk_and_still_match() {
    let tmp = TempDir::new("redact");
    let dir = tmp.recordings();
    let upstream = Upstream::standard().await;
    let port = upstream.port();
    let toml = config_toml(
        port,
        "",
        "redact_request_headers = [\"Authorization\", \"X-Api-Key\"]",
    );

    let proxy = start_proxy_with(Mode::Record, &dir, &toml).await;
    let mut c = Client::connect(proxy.addr()).await;
    let recorded = c
        .request(&test_request(
            "secret",
            "GET",
            "/echo/me",
            &[
                ("Authorization", "Bearer SECRET-TOKEN-123"),
                ("x-api-key", "SECRET-TOKEN-123"),
            ],
            b"",
        ))
        .await;
    let recorded_post = c
        .request(&test_request(
            "secret",
            "POST",
            "/echo/me",
            &[("authorization", "Bearer SECRET-TOKEN-123")],
            b"payload",
        ))
        .await;
    drop(c);
    stop_proxy(proxy).await;
    assert_eq!(recorded.status, 200);
    // The upstream gets the real credentials.
    let seen = upstream.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some(&b"Bearer SECRET-TOKEN-123"[..])
    );
    assert_eq!(seen[0].header("x-api-key"), Some(&b"SECRET-TOKEN-123"[..]));
    upstream.stop().await;

    let files = files_under(&dir);
    assert!(!files.is_empty());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !contains(&bytes, b"SECRET-TOKEN-123"),
            "{} contains the secret:\n{}",
            f.display(),
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            !contains(&bytes, b"U0VDUkVULVRPS0VOLTEyMw"),
            "{} contains the secret in base64",
            f.display()
        );
    }
    let rec = read_recording(&dir, "secret");
    let headers = rec["interactions"][0]["request"]["headers"]
        .as_array()
        .unwrap()
        .clone();
    let auth = headers
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("authorization"))
        .expect("header kept");
    assert_eq!(auth[1], "[REDACTED]");

    let proxy = start_proxy_with(Mode::Replay, &dir, &toml).await;
    let mut c = Client::connect(proxy.addr()).await;
    let replayed = c
        .request(&test_request(
            "secret",
            "GET",
            "/echo/me",
            &[
                ("Authorization", "Bearer SOMETHING-ELSE"),
                ("X-Api-Key", "other"),
            ],
            b"",
        ))
        .await;
    assert_eq!(
        replayed.status,
        200,
        "a different token must still match: {}",
        replayed.describe()
    );
    crate::support::client::assert_same_response(&recorded, &replayed);
    // Without the header at all: also the same request.
    let replayed_post = c
        .request(&test_request("secret", "POST", "/echo/me", &[], b"payload"))
        .await;
    crate::support::client::assert_same_response(&recorded_post, &replayed_post);
    drop(c);
    let miss = one_shot(
        proxy.addr(),
        &test_request(
            "secret",
            "GET",
            "/echo/other",
            &[("Authorization", "Bearer X")],
            b"",
        ),
    )
    .await;
    assert_eq!(miss.status, 599);
    assert!(!miss.body_str().contains("SECRET-TOKEN-123"));
}
