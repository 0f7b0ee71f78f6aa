//! `terway`: the CNI plugin binary. All logic lives in the library; this only wires stdin/env/stdout.

fn main() {
    std::process::exit(cni_protocol::run_process(terway_cni::handle));
}
