//! The unmodified official Alibaba Cloud Python SDKs against the emulator over HTTP. Needs
//! `pip install alibabacloud_ecs20140526 alibabacloud_vpc20160428`; the test FAILS (it does not skip)
//! when python3 or the SDK is missing, so CI cannot go green without it.

mod common;

use std::process::Command;

use common::*;

fn run_sdk(emu: &terway_emulator::RunningEmulator, vsw: &str, inst: &str, signature: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/sdk_roundtrip.py");
    let ak = emu.access_key();
    let out = Command::new("python3")
        .arg(script)
        .env("EMU_ENDPOINT", emu.api_addr().to_string())
        .env("EMU_AK", ak.id)
        .env("EMU_SECRET", ak.secret)
        .env("EMU_REGION", emu.region_id())
        .env("EMU_VSWITCH", vsw)
        .env("EMU_INSTANCE", inst)
        .env("EMU_SIGNATURE", signature)
        .output()
        .expect("python3 must be installed to run the official-SDK test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "official SDK round trip ({signature}) failed; install the SDK with \
         `pip install alibabacloud_ecs20140526 alibabacloud_vpc20160428`\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("SDK round trip"),
        "unexpected output: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_round_trip_acs3_and_hmac_sha1() {
    let cfg = fast_config();
    let (inst, vsw) = (node(&cfg), vswitch(&cfg));
    let emu = start(cfg);
    let emu_ref = &emu;
    // The SDK blocks; run it off the runtime threads so the emulator keeps serving.
    tokio::task::block_in_place(|| {
        run_sdk(emu_ref, &vsw, &inst, "v3");
        run_sdk(emu_ref, &vsw, &inst, "v2");
    });
    // Every SDK call was authenticated and all ENIs it made are gone.
    let calls = emu.calls();
    assert!(
        calls
            .iter()
            .filter(|c| c.action == "CreateNetworkInterface" && c.code == "OK")
            .count()
            >= 2
    );
    assert!(
        calls.iter().all(|c| c.code != "SignatureDoesNotMatch"),
        "a signature was rejected: {calls:?}"
    );
    assert_eq!(
        emu.state().enis.len(),
        1,
        "only the node's primary ENI remains"
    );
    emu.shutdown().await;
}
