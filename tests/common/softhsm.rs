//! SoftHSM2 for the tests: each test gets its own token directory, `softhsm2.conf` and
//! token, initialised with `softhsm2-util` from Debian's `softhsm2` package.
//!
//! A PKCS#11 module reads its configuration once per process (at `C_Initialize`), so a
//! test that drives the module in-process runs its body in a child process of the test
//! binary with its own `SOFTHSM2_CONF`: see [`in_own_softhsm`].

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TempDir;

/// The user PIN of test tokens.
pub const PIN: &str = "4711-test";
/// The security officer PIN of test tokens.
pub const SO_PIN: &str = "0000-so";
/// Set in the child process: the directory of the SoftHSM2 set-up the parent made.
const CHILD_DIR: &str = "DRAWBRIDGE_TEST_SOFTHSM_DIR";
/// Set in the child process: the token label.
const CHILD_LABEL: &str = "DRAWBRIDGE_TEST_SOFTHSM_LABEL";

/// Where Debian installs the module (multiarch first, then the compatibility path).
pub fn module() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM2 is installed (cargo xtask test installs the softhsm2 package)")
}

/// A SoftHSM2 set-up of one test: a token directory, its configuration and one token.
pub struct SoftHsm {
    dir: Option<TempDir>,
    pub root: PathBuf,
    pub conf: PathBuf,
    pub label: String,
}

impl SoftHsm {
    /// A fresh set-up with one token labelled `label`. `disabled` names mechanisms the
    /// module must not offer (`CKM_EDDSA`, …), to stand in for a module that lacks them.
    pub fn new(name: &str, label: &str, disabled: &[&str]) -> SoftHsm {
        let dir = TempDir::new(&format!("softhsm-{name}"));
        let root = dir.path().to_path_buf();
        let tokens = root.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = root.join("softhsm2.conf");
        let mut text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        );
        if let Some(first) = disabled.first() {
            // SoftHSM 2.6 reads "-A,B,C" as "all but A, B, C", but skips the name right
            // after the minus: it is given twice.
            text.push_str(&format!(
                "slots.mechanisms = -{first},{}\n",
                disabled.join(",")
            ));
        }
        std::fs::write(&conf, text).unwrap();
        let hsm = SoftHsm {
            dir: Some(dir),
            root,
            conf,
            label: label.to_string(),
        };
        hsm.util(&[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ]);
        hsm
    }

    /// Runs softhsm2-util on this set-up; fails the test when it fails.
    pub fn util(&self, args: &[&str]) -> String {
        run(Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf))
    }

    /// Runs pkcs11-tool (from OpenSC) on this set-up's token, logged in.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let module = module();
        run(Command::new("pkcs11-tool")
            .arg("--module")
            .arg(&module)
            .args(["--token-label", &self.label, "--login", "--pin", PIN])
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf))
    }

    /// Writes a PIN file (`label:PIN`) for this token and returns its path.
    pub fn pin_file(&self, pin: &str) -> PathBuf {
        let path = self.root.join("sslpassword.conf");
        std::fs::write(&path, format!("{}:{pin}\n", self.label)).unwrap();
        path
    }

    /// Configuration lines that select this token.
    pub fn config_lines(&self, pin_file: &Path) -> String {
        format!(
            "set system token backend pkcs11\n\
             set system token module {}\n\
             set system token label {}\n\
             set system token pin-file {}\n",
            module().display(),
            self.label,
            pin_file.display()
        )
    }

    /// The set-up a child process was started in, by [`in_own_softhsm`].
    fn from_child_env() -> Option<SoftHsm> {
        let root = PathBuf::from(std::env::var_os(CHILD_DIR)?);
        Some(SoftHsm {
            dir: None,
            conf: root.join("softhsm2.conf"),
            root,
            label: std::env::var(CHILD_LABEL).unwrap_or_default(),
        })
    }
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (is it installed?)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed: {text}");
    text
}

/// Runs `body` with a SoftHSM2 set-up of its own: the test binary runs the test named
/// `test` again in a child process with `SOFTHSM2_CONF` pointing at a fresh set-up, and
/// the child runs `body`. Call it as the whole body of the test function named `test`.
pub fn in_own_softhsm(test: &str, disabled: &[&str], body: impl FnOnce(&SoftHsm)) {
    if let Some(hsm) = SoftHsm::from_child_env() {
        body(&hsm);
        return;
    }
    let hsm = SoftHsm::new(test, "drawbridge-test", disabled);
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env(CHILD_DIR, &hsm.root)
        .env(CHILD_LABEL, &hsm.label)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{test} in its own SoftHSM2:\n{text}"
    );
    // The child really ran the test (a misspelt name would run nothing and pass).
    assert!(text.contains("1 passed"), "{test} did not run:\n{text}");
}

/// One object in `pkcs11-tool --list-objects` output.
#[derive(Debug)]
pub struct ListedObject {
    /// The heading line: `Private Key Object; EC`, `Secret Key Object; …`.
    pub heading: String,
    pub label: String,
    /// The `Access:` line: `sensitive, always sensitive, never extractable, local`.
    pub access: Vec<String>,
}

impl ListedObject {
    /// A private or secret key object.
    pub fn is_key(&self) -> bool {
        self.heading.starts_with("Private Key Object")
            || self.heading.starts_with("Secret Key Object")
    }

    /// Sensitive and not extractable: its value never leaves the token.
    pub fn stays_on_token(&self) -> bool {
        self.access.iter().any(|a| a == "sensitive")
            && !self.access.iter().any(|a| a == "extractable")
    }
}

/// The objects `pkcs11-tool --list-objects` lists.
pub fn list_objects(listing: &str) -> Vec<ListedObject> {
    let mut objects: Vec<ListedObject> = Vec::new();
    for line in listing.lines() {
        if !line.starts_with(' ') && line.contains("Object") {
            objects.push(ListedObject {
                heading: line.to_string(),
                label: String::new(),
                access: Vec::new(),
            });
        } else if let Some(object) = objects.last_mut() {
            let line = line.trim();
            if let Some(label) = line.strip_prefix("label:") {
                object.label = label.trim().to_string();
            } else if let Some(access) = line.strip_prefix("Access:") {
                object.access = access.split(',').map(|a| a.trim().to_string()).collect();
            }
        }
    }
    objects
}
