//! The README's Python commands, taken from README.md and run as written (so a change to the
//! README that breaks them breaks this test): generating a client with grpcio-tools, and the
//! council client's section against a dev stack. `.tools` is the tools directory the tests use
//! (`CPIS_TOOLS`), linked into a scratch directory that stands for the repository root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::DevStack;

/// The commands of the first ```sh block after `marker` in README.md, with continued lines
/// joined and comments dropped.
fn readme_commands(marker: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(cpis_testkit::tools::repo_root().join("README.md"))
        .expect("README.md");
    let after = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("README lacks {marker:?}"))..];
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.split("   #").next().unwrap_or(line).trim_end();
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    commands.push(std::mem::take(&mut current).trim().to_owned());
                }
                current.clear();
            }
        }
    }
    commands
}

/// A scratch "repository root": `proto` and `examples` of the checkout and `.tools` of the
/// tests, linked.
fn scratch_root(tools: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let repo = cpis_testkit::tools::repo_root();
    for name in ["proto", "examples"] {
        std::os::unix::fs::symlink(repo.join(name), root.path().join(name)).unwrap();
    }
    std::os::unix::fs::symlink(tools, root.path().join(".tools")).unwrap();
    root
}

/// Runs `command` with bash in `root` with `env`; returns (exit code, stdout, stderr).
fn sh(root: &Path, command: &str, env: &[(String, String)]) -> (i32, String, String) {
    let out = Command::new("bash")
        .args(["-c", command])
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("bash");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tools directory holding the venv the README's commands name, when installed.
fn tools() -> Option<PathBuf> {
    let python = cpis_testkit::tools::python()?;
    // TOOLS/venv/bin/python
    Some(python.parent()?.parent()?.parent()?.to_path_buf())
}

#[test]
fn readme_python_commands_run_as_written() {
    let Some(tools) = tools() else {
        return;
    };
    let root = scratch_root(&tools);

    // "Generate a client, for example in Python".
    let generate = readme_commands("Generate a client, for example in Python");
    assert!(generate.len() >= 2, "{generate:?}");
    for command in &generate {
        let (code, out, err) = sh(root.path(), command, &[]);
        assert_eq!(code, 0, "{command}: {out}{err}");
    }
    assert!(
        root.path()
            .join("out/cpis/registry/v1/council_pb2_grpc.py")
            .exists(),
        "the stubs were generated"
    );

    // "A council client in Python", against a dev stack with three accesses to notify.
    let stack = DevStack::start();
    for number in ["9990000018", "9990000026", "9990000034"] {
        stack.ed_lookup(number);
    }
    let commands = readme_commands("### A council client in Python");
    let mut env: Vec<(String, String)> = Vec::new();
    let mut ran = Vec::new();
    for command in &commands {
        if command.starts_with("bash scripts/tools.sh") {
            // The test suite installed the tools already (scripts/test.sh).
            continue;
        }
        if let Some(assignments) = command.strip_prefix("export ") {
            for assignment in assignments.split_whitespace() {
                let (name, _) = assignment.split_once('=').expect("NAME=value");
                // The values `cpis dev` prints for this stack.
                let value = match name {
                    "CPIS_REGISTRY_URL" => stack.registry_url.clone(),
                    "CPIS_COUNCIL_TOKEN" => stack.council_token.clone(),
                    other => panic!("the README exports {other}, which cpis dev does not print"),
                };
                env.push((name.to_owned(), value));
            }
            continue;
        }
        let (code, out, err) = sh(root.path(), command, &env);
        ran.push((command.clone(), code, out, err));
    }
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["CPIS_REGISTRY_URL", "CPIS_COUNCIL_TOKEN"]);
    assert_eq!(ran.len(), 2, "{ran:?}");
    let (command, code, out, err) = &ran[0];
    assert!(command.contains("council_client.py upload"), "{command}");
    assert_eq!(
        *code, 3,
        "the example extract has rejected rows: {out}{err}"
    );
    assert!(
        out.contains("accepted 4  rejected 2  malformed 1"),
        "{out}{err}"
    );
    let (command, code, out, err) = &ran[1];
    assert!(
        command.contains("council_client.py watch --count 3"),
        "{command}"
    );
    assert_eq!(*code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 3, "{out}{err}");
    assert!(out.lines().all(|l| l.contains(" ACCESS ")), "{out}");
}
