//! The standalone entry point (`terway-lab cloud`) and the example configuration file.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use terway_emulator::{run_standalone_until, EmulatorConfig, StandaloneListen};

#[test]
fn example_config_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("emulator.example.json");
    let cfg = EmulatorConfig::from_file(&path).expect("example config parses");
    cfg.validate().expect("example config is consistent");
    assert_eq!(cfg.instances.len(), 2);
    assert_eq!(cfg.delays.attach_max_ms, 3000);
    let err = serde_json::from_str::<EmulatorConfig>(r#"{"no_such_knob": 1}"#).unwrap_err();
    assert!(
        err.to_string().contains("no_such_knob"),
        "unknown keys are rejected: {err}"
    );
}

struct Shared(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn standalone_prints_endpoint_and_key_and_serves() {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sink = Arc::clone(&printed);
    let server = tokio::spawn(async move {
        let mut out = Shared(sink);
        let at = StandaloneListen {
            admin: Some(admin),
            ..StandaloneListen::api(listen)
        };
        run_standalone_until(at, None, &mut out, async {
            let _ = rx.await;
        })
        .await
    });
    let url = format!("http://{listen}");
    let admin_url = format!("http://{admin}");
    let http = http_client();
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("{admin_url}/_emulator/state"))
            .send()
            .await
        {
            assert!(r.status().is_success(), "admin state: {}", r.status());
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(up, "standalone emulator never answered");
    // The OpenAPI endpoint does not serve the admin API.
    let refused = http
        .get(format!("{url}/_emulator/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let text = String::from_utf8(printed.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains(&format!("OpenAPI endpoint:  {url}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("admin API:         {admin_url} (its own listener")),
        "the admin listener is printed: {text}"
    );
    assert!(
        text.contains("AccessKeyId:       LTAIEMULATORKEY")
            && text.contains("AccessKeySecret:   emulator-secret"),
        "{text}"
    );
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
