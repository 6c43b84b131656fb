//! `scripts/trace.sh --local-demo`: a random BERT classifier built with transformers here (no hub),
//! traced to ONNX, served by stowage and checked against PyTorch. PyTorch is several GB, so this
//! runs only when STOWAGE_TRACE_VENV names a virtual environment for scripts/trace.sh (it installs
//! what is missing there); otherwise it is skipped with a message.

#[test]
fn a_traced_model_serves_the_same_scores_as_pytorch() {
    let Ok(venv) = std::env::var("STOWAGE_TRACE_VENV") else {
        eprintln!("skipped: set STOWAGE_TRACE_VENV to a virtual environment for scripts/trace.sh");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::run(
        std::process::Command::new("scripts/trace.sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--local-demo")
            .arg(dir.path().join("demo"))
            .env("STOWAGE_BIN", env!("CARGO_BIN_EXE_stowage"))
            .env("STOWAGE_TRACE_VENV", venv),
    );
    assert!(out.contains("served by stowage vs PyTorch: largest score difference"), "{out}");
    let entry = std::fs::read_to_string(dir.path().join("demo/entry.toml")).unwrap();
    assert!(entry.contains("id = \"traced-0001\""), "{entry}");
}
