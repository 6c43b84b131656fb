//! What the repository itself must hold: no archives, wheels or downloaded binaries, nothing large
//! (an image build sends every tracked file to the Docker daemon with `COPY . .`).

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The largest tracked file allowed: the biggest fixtures are a few hundred KiB.
const MAX_BYTES: u64 = 1 << 20;

#[test]
fn no_archive_wheel_or_large_file_is_tracked() {
    let out = Command::new("git").current_dir(ROOT).args(["ls-files", "-z"]).output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        eprintln!("skipping: not a git checkout");
        return;
    };
    let mut found = Vec::new();
    for path in String::from_utf8_lossy(&out.stdout).split('\0').filter(|p| !p.is_empty()) {
        let archive =
            [".whl", ".tar.gz", ".tgz", ".zip", ".tar", ".so", ".deb", ".jar"].iter().any(|e| path.ends_with(e));
        // A file deleted in the work tree but not yet from the index has no size to check.
        let size = std::fs::metadata(format!("{ROOT}/{path}")).map_or(0, |m| m.len());
        if archive || size > MAX_BYTES {
            found.push(format!("{path} ({size} bytes)"));
        }
    }
    assert!(found.is_empty(), "tracked files that belong outside the repository:\n{}", found.join("\n"));
}
