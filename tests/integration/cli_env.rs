//! The command line's environment variables: each names one flag (the same meaning in every
//! command that reads it), and docs/cli.md lists every one with its command and flag.

use std::collections::BTreeMap;

use clap::CommandFactory;
use stowage::cli::Cli;

/// (command, flag, variable) for every flag with a variable; "(every command)" for global ones.
fn variables() -> Vec<(String, String, String)> {
    let cli = Cli::command();
    let mut out = Vec::new();
    let mut add = |command: &str, arg: &clap::Arg| {
        if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
            out.push((command.to_string(), format!("--{long}"), env.to_string_lossy().into_owned()));
        }
    };
    for arg in cli.get_arguments() {
        add("(every command)", arg);
    }
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
            add(sub.get_name(), arg);
        }
    }
    out
}

#[test]
fn each_variable_names_one_flag() {
    let mut flags: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (command, flag, env) in variables() {
        flags.entry(env).or_default().push((command, flag));
    }
    assert!(flags.len() > 50, "the scan found only {} variables", flags.len());
    for (env, uses) in &flags {
        let first = &uses[0].1;
        assert!(uses.iter().all(|(_, f)| f == first), "{env} names different flags: {uses:?}");
    }
    // What commands write has names of their own (one of them once read STOWAGE_OUT in five commands).
    assert!(!flags.contains_key("STOWAGE_OUT") && !flags.contains_key("STOWAGE_SEED"));
}

#[test]
fn docs_list_every_variable() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let missing: Vec<String> = variables()
        .into_iter()
        .filter(|(c, f, e)| !doc.contains(&format!("| `{c}` | `{f}` | `{e}` |")))
        .map(|(c, f, e)| format!("{c} {f} {e}"))
        .collect();
    assert!(missing.is_empty(), "docs/cli.md lacks:\n{}", missing.join("\n"));
}
