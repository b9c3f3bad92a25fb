//! Entrypoint of the ingress container image (infra/Dockerfile).
//!
//! ECS injects secrets from Secrets Manager or SSM Parameter Store as environment variables, but
//! the ingress reads its TLS certificate, TLS key, AUTH file and recipient table from files named
//! by `INGRESS_TLS_CERT`, `INGRESS_TLS_KEY`, `INGRESS_AUTH_FILE` and `INGRESS_RECIPIENTS_FILE`
//! (the contract). For each pair in
//! [`FILE_VARS`] whose content variable is set, this program writes the content to a private file
//! (directory 0700, file 0600, owned by the container user), points the path variable at it,
//! removes the content variable from the environment, and then replaces itself (`exec`) with the
//! ingress, or with the command given as arguments. Nothing else is changed.
//!
//! The runtime image is distroless (no shell), so this is a std-only Rust program compiled with
//! plain `rustc` in the image's build stage; tests/test_ingress_entrypoint.py exercises it.
//! The deploy drift test (tests/test_template_env.py) parses [`ENTRYPOINT_VARS`] and
//! [`FILE_VARS`] from this file: keep them as plain string literals.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Every variable this entrypoint reads itself (none of them reaches the ingress).
pub const ENTRYPOINT_VARS: &[&str] = &[
    "INGRESS_TLS_CERT_PEM",
    "INGRESS_TLS_KEY_PEM",
    "INGRESS_AUTH_FILE_CONTENT",
    "INGRESS_RECIPIENTS_FILE_CONTENT",
    "INGRESS_SECRETS_DIR",
];

/// (variable holding the content, contract variable that names the file, file name).
pub const FILE_VARS: &[(&str, &str, &str)] = &[
    ("INGRESS_TLS_CERT_PEM", "INGRESS_TLS_CERT", "tls-cert.pem"),
    ("INGRESS_TLS_KEY_PEM", "INGRESS_TLS_KEY", "tls-key.pem"),
    ("INGRESS_AUTH_FILE_CONTENT", "INGRESS_AUTH_FILE", "auth-file"),
    ("INGRESS_RECIPIENTS_FILE_CONTENT", "INGRESS_RECIPIENTS_FILE", "recipients-file"),
];

/// Where the files go unless `INGRESS_SECRETS_DIR` says otherwise (not under a shared volume).
const DEFAULT_DIR: &str = "/tmp/ingress-secrets";
/// What runs when no command is given.
const DEFAULT_COMMAND: &str = "/usr/local/bin/ingress";

fn non_empty(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn fail(msg: String) -> ExitCode {
    eprintln!("ingress-entrypoint: {msg}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let program = args.next().unwrap_or_else(|| OsString::from(DEFAULT_COMMAND));
    let mut cmd = Command::new(&program);
    cmd.args(args);

    let dir = non_empty("INGRESS_SECRETS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    cmd.env_remove("INGRESS_SECRETS_DIR");

    for (content_var, path_var, file_name) in FILE_VARS {
        let content = non_empty(content_var);
        cmd.env_remove(content_var);
        let Some(content) = content else { continue };
        if non_empty(path_var).is_some() {
            return fail(format!("{content_var} and {path_var} are both set; set only one"));
        }
        if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
            return fail(format!("{content_var}: cannot create {}: {e}", dir.display()));
        }
        // An existing directory keeps its mode; make sure it is private.
        if let Err(e) = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)) {
            return fail(format!("{content_var}: cannot restrict {}: {e}", dir.display()));
        }
        let path = dir.join(file_name);
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(content.as_encoded_bytes()).and_then(|()| f.sync_all()));
        if let Err(e) = written {
            return fail(format!("{content_var}: cannot write {}: {e}", path.display()));
        }
        cmd.env(path_var, &path);
    }

    let err = cmd.exec();
    eprintln!("ingress-entrypoint: cannot run {}: {err}", PathBuf::from(program).display());
    ExitCode::from(127)
}
