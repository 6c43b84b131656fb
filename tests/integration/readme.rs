//! The README's console examples, run as written: every ```console block, in order, in one
//! scratch folder that holds the repository's files (links to them), with this build's `stowage`
//! first on PATH. A `$ ` line is a command (`\` at the end of a line and `> ` lines continue it, as
//! a shell's prompts show them); the lines up to the next command are what it must print, stdout
//! and stderr together, where `…` stands for any text within a line and a line of only `…` for any
//! number of lines. A command must exit 0 unless what it must print holds an `error:` line.
//! Commands of one block share one shell (so `&` jobs and variables carry over); blocks share the
//! folder. Ports 8080 and 5123 in a block are mapped to free ports. ```sh blocks are not run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One command of a block and what it must print.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub command: String,
    pub expected: Vec<String>,
    /// Line of the README where the command starts.
    pub line: usize,
}

/// The ```console blocks of a Markdown text, each a list of steps.
pub fn console_blocks(markdown: &str) -> Vec<Vec<Step>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<Step>> = None;
    let mut continuing = false;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_end();
        match &mut current {
            None if trimmed == "```console" => current = Some(Vec::new()),
            None => {}
            Some(_) if trimmed == "```" => {
                blocks.extend(current.take());
                continuing = false;
            }
            Some(steps) => {
                if let Some(cmd) = trimmed.strip_prefix("$ ") {
                    steps.push(Step { command: cmd.to_string(), expected: Vec::new(), line: n + 1 });
                    continuing = cmd.ends_with('\\');
                } else if let Some(step) =
                    steps.last_mut().filter(|s| continuing || (is_prompt2(trimmed) && s.expected.is_empty()))
                {
                    if !continuing {
                        step.command.push('\n');
                        step.command.push_str(
                            trimmed.strip_prefix('>').unwrap_or_default().strip_prefix(' ').unwrap_or_default(),
                        );
                    } else {
                        step.command.push('\n');
                        step.command.push_str(trimmed);
                        continuing = trimmed.ends_with('\\');
                    }
                } else if let Some(step) = steps.last_mut() {
                    step.expected.push(trimmed.to_string());
                }
            }
        }
    }
    blocks
}

/// A line of a command that goes on (a shell's secondary prompt): `> text`, or `>` alone.
fn is_prompt2(line: &str) -> bool {
    line == ">" || line.starts_with("> ")
}

/// Whether `text` matches `pattern`, where `…` stands for any text (the rest is literal).
pub fn line_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the lines of `actual` match the `expected` lines (`…` lines take any number of lines).
pub fn output_matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e == "…" => (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..])),
        Some((e, rest)) => {
            actual.split_first().is_some_and(|(a, more)| line_matches(e, a) && output_matches(rest, more))
        }
    }
}

/// A scratch folder with a link to every top-level entry of the repository but its build and
/// output folders: what a user who cloned it sees, with the README's files written apart.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(ROOT).unwrap().flatten() {
        let name = e.file_name();
        if [".git", "target", "out", ".venv"].iter().any(|n| name == *n) {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), dir.path().join(&name)).unwrap();
    }
    dir
}

/// The bash script that runs a block's commands, each one's output and exit status in files.
fn script(steps: &[Step], ports: (u16, u16), results: &Path) -> String {
    // Cargo builds in the repository (its own target folder), as a user's command there would.
    let mut s = format!(
        "cargo() {{ local sub=$1; shift; command cargo \"$sub\" --manifest-path {ROOT}/Cargo.toml \"$@\"; }}\n"
    );
    for (i, step) in steps.iter().enumerate() {
        let cmd = step.command.replace("8080", &ports.0.to_string()).replace("5123", &ports.1.to_string());
        let out = results.join(format!("{i}.out"));
        s.push_str(&format!(
            "{{\n{cmd}\n}} > {out} 2>&1 < /dev/null\necho $? > {}\n",
            results.join(format!("{i}.rc")).display(),
            out = out.display()
        ));
    }
    // Whatever a block left running in the background stops with it.
    s.push_str("kill $(jobs -p) 2> /dev/null; wait 2> /dev/null; exit 0\n");
    s
}

#[test]
fn the_readme_console_examples_run_as_written() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let blocks = console_blocks(&readme);
    assert!(blocks.len() >= 6, "only {} console blocks found: is the parser broken?", blocks.len());
    let dir = workspace();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_stowage"));
    let mut path = vec![bin.parent().unwrap().to_path_buf()];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let mut failures = Vec::new();
    for (b, steps) in blocks.iter().enumerate() {
        let results = dir.path().join(format!(".readme-{b}"));
        std::fs::create_dir_all(&results).unwrap();
        let ports = (crate::common::free_port(), crate::common::free_port());
        let status = Command::new("bash")
            .arg("-c")
            .arg(script(steps, ports, &results))
            .current_dir(dir.path())
            .env("PATH", std::env::join_paths(&path).unwrap())
            .env("STOWAGE_BIN", &bin)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .status()
            .unwrap();
        if !status.success() {
            failures.push(format!("README.md:{}: the block did not run (a shell syntax error?)", steps[0].line));
            continue;
        }
        for (i, step) in steps.iter().enumerate() {
            let out = std::fs::read_to_string(results.join(format!("{i}.out"))).unwrap_or_default();
            let out = out.replace(&ports.0.to_string(), "8080").replace(&ports.1.to_string(), "5123");
            let rc: i32 = std::fs::read_to_string(results.join(format!("{i}.rc")))
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap_or(-1);
            let mut lines: Vec<&str> = out.lines().map(str::trim_end).collect();
            let mut expected = step.expected.clone();
            // Blank lines at the end (before the next command or the fence) are layout.
            while lines.last().is_some_and(|l| l.is_empty()) {
                lines.pop();
            }
            while expected.last().is_some_and(|l| l.is_empty()) {
                expected.pop();
            }
            let may_fail = expected.iter().any(|l| l.starts_with("error:"));
            if !output_matches(&expected, &lines) || (rc != 0 && !may_fail) {
                failures.push(format!(
                    "README.md:{}: $ {}\nexit {rc}; expected:\n{}\ngot:\n{}",
                    step.line,
                    step.command,
                    step.expected.join("\n"),
                    out
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} README examples differ:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn the_example_parser_and_matcher() {
    let md =
        "text\n```console\n$ echo a \\\n  b\na b\n$ cat <<EOF\n> x\n>\n> EOF\nx\n\n$ true\n```\n```sh\n$ not run\n```\n";
    let blocks = console_blocks(md);
    assert_eq!(blocks.len(), 1);
    let steps = &blocks[0];
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0].command, "echo a \\\n  b");
    assert_eq!(steps[0].expected, ["a b"]);
    assert_eq!(steps[1].command, "cat <<EOF\nx\n\nEOF");
    assert_eq!(steps[1].expected, ["x", ""]);
    assert!(steps[2].expected.is_empty());
    assert!(line_matches("in … s", "in 0.23 s"));
    assert!(line_matches("a…c…e", "abcde") && !line_matches("a…c…e", "abde"));
    assert!(!line_matches("ab…ba", "aba"), "the two ends may not overlap");
    let exp = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(output_matches(&exp(&["x", "…", "z"]), &["x", "y", "y", "z"]));
    assert!(output_matches(&exp(&["x", "…"]), &["x"]));
    assert!(!output_matches(&exp(&["x", "z"]), &["x", "y", "z"]));
}
