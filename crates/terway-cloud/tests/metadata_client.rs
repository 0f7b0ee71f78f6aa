//! The metadata client's token handling and retries against a scripted metadata server on loopback
//! (the emulator is well behaved; this server misbehaves on purpose): token cached across reads,
//! 401 → one refresh, 5xx retried on the metadata backoff, the extra header always sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use terway_cloud::backoff::{Backoff, BackoffTable, METADATA};
use terway_cloud::{MetadataClient, MetadataConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Script {
    tokens_issued: AtomicUsize,
    /// Tokens issued before this number are refused.
    min_valid: AtomicUsize,
    gets: Mutex<BTreeMap<String, usize>>,
}

impl Script {
    fn answer(
        &self,
        method: &str,
        path: &str,
        headers: &BTreeMap<String, String>,
    ) -> (u16, String) {
        if headers.get("x-emulator-instance-id").map(String::as_str) != Some("i-test") {
            return (404, "who are you".into());
        }
        if method == "PUT" && path == "/latest/api/token" {
            if headers
                .get("x-aliyun-ecs-metadata-token-ttl-seconds")
                .is_none()
            {
                return (400, "ttl".into());
            }
            let n = self.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
            return (200, format!("tok-{n}"));
        }
        let token_ok = headers
            .get("x-aliyun-ecs-metadata-token")
            .and_then(|t| t.strip_prefix("tok-"))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n >= self.min_valid.load(Ordering::SeqCst));
        if !token_ok {
            return (401, "token".into());
        }
        let count = {
            let mut g = self.gets.lock().unwrap();
            let c = g.entry(path.to_string()).or_default();
            *c += 1;
            *c
        };
        match path {
            "/latest/meta-data/instance-id" => (200, "i-test".into()),
            "/latest/meta-data/zone-id" if count <= 2 => (503, "busy".into()),
            "/latest/meta-data/zone-id" => (200, "cn-hangzhou-i".into()),
            "/latest/meta-data/vpc-id" => (500, "broken".into()),
            _ => (404, "Not Found".into()),
        }
    }
}

async fn serve(script: Arc<Script>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let mut lines = text.split("\r\n");
                let mut first = lines.next().unwrap_or_default().split(' ');
                let (method, path) = (
                    first.next().unwrap_or_default(),
                    first.next().unwrap_or_default(),
                );
                let headers: BTreeMap<String, String> = lines
                    .take_while(|l| !l.is_empty())
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let (status, body) = script.answer(method, path, &headers);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

fn client(base: String) -> MetadataClient {
    let mut cfg = MetadataConfig {
        base_url: base,
        timeout_secs: 5,
        ..Default::default()
    };
    cfg.extra_headers
        .insert("X-Emulator-Instance-Id".into(), "i-test".into());
    let quick = Backoff {
        initial_delay: std::time::Duration::ZERO,
        duration: std::time::Duration::from_millis(10),
        factor: 1.2,
        jitter: 0.1,
        steps: 4,
        cap: None,
    };
    let table = BackoffTable::new(&BTreeMap::from([(METADATA.to_string(), quick.into())]));
    MetadataClient::new(cfg, &table).unwrap()
}

#[tokio::test]
async fn token_cached_refreshed_once_on_401_and_5xx_retried() {
    let script = Arc::new(Script::default());
    let md = client(serve(script.clone()).await);

    assert_eq!(md.get_required("instance-id").await.unwrap(), "i-test");
    assert_eq!(md.get_required("instance-id").await.unwrap(), "i-test");
    assert_eq!(
        script.tokens_issued.load(Ordering::SeqCst),
        1,
        "the token is cached"
    );

    // The server forgets every token issued so far: the next read gets 401, refreshes once, succeeds.
    script.min_valid.store(2, Ordering::SeqCst);
    assert_eq!(md.get_required("instance-id").await.unwrap(), "i-test");
    assert_eq!(script.tokens_issued.load(Ordering::SeqCst), 2);

    // Two 503s are retried away; a path that always fails gives up after the 4 attempts.
    assert_eq!(md.get_required("zone-id").await.unwrap(), "cn-hangzhou-i");
    let err = md.get_required("vpc-id").await.unwrap_err();
    assert!(err.to_string().contains("vpc-id"), "{err}");
    assert_eq!(script.gets.lock().unwrap()["/latest/meta-data/vpc-id"], 4);

    // 404 is "absent", not an error.
    assert_eq!(
        md.get("network/interfaces/macs/00:00:00:00:00:00/ipv6s")
            .await
            .unwrap(),
        None
    );
}
