//! `cargo xtask test`: install the Debian packages the tests drive when one is missing, then
//! run every test of the workspace.
//!
//! A machine that has them all does no network work: each package is checked with
//! `dpkg-query` first, and apt-get runs only for what is missing.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use crate::process;
use crate::{Context, Failure};

/// Debian packages the tests drive, and what for.
const PACKAGES: &[(&str, &str)] = &[
    ("postfix", "smtp-source, smtp-sink and Postfix itself"),
    ("swaks", "an SMTP client for integration tests"),
    ("python3", "smtplib as an SMTP client for integration tests"),
    ("openssl", "s_client for TLS tests, and test certificates"),
    // The binary only: the `dnsmasq` package would also start a system DNS service.
    ("dnsmasq-base", "dnsmasq as a local DNS server for MX tests"),
    (
        "testssl.sh",
        "testssl as an independent TLS scanner for the TLS tests",
    ),
    (
        "softhsm2",
        "SoftHSM2, the PKCS#11 module the token backend is tested against",
    ),
    (
        "opensc",
        "pkcs11-tool, to show that keys on the PKCS#11 token are not extractable",
    ),
    (
        "qemu-system-x86",
        "qemu-system-x86_64, which boots the firmware image in the image tests",
    ),
    (
        "pflogsumm",
        "the log summariser the log tests read the gateway's mail log with",
    ),
    // Its system service, where one starts, listens nowhere: Debian's configuration has
    // no frontend. The tests run their own in the foreground.
    (
        "haproxy",
        "a real load balancer sending PROXY headers (v1 and v2) in the PROXY protocol tests",
    ),
    (
        "e2fsprogs",
        "mke2fs in the initramfs, and debugfs, which reads and writes the test data disks",
    ),
];

/// debconf answer that lets postfix install without questions and without configuring
/// (or starting) a system mail service.
const POSTFIX_PRESEED: &str = "postfix postfix/main_mailer_type select No configuration\n";

/// What `dpkg-query -W -f='${Status}'` prints for an installed package.
const INSTALLED: &str = "install ok installed";

pub fn run(cargo_args: &[String]) -> Result<ExitCode, Failure> {
    ensure_packages()?;
    ensure_python_modules()?;
    let root = crate::workspace_root();
    let mut command = Command::new(crate::cargo());
    command
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .args(cargo_args)
        .current_dir(&root);
    let shown: Vec<&str> = [
        "cargo",
        "test",
        "--workspace",
        "--all-targets",
        "--no-fail-fast",
    ]
    .into_iter()
    .chain(cargo_args.iter().map(String::as_str))
    .collect();
    println!("xtask: {}", shown.join(" "));
    let status = command.status().context("running cargo test")?;
    if !status.success() {
        return Ok(exit_code(status));
    }
    // The fuzz targets live outside the workspace (cargo-fuzz builds them with
    // sanitizers): checking that they still compile keeps them from rotting.
    let manifest = root.join(crate::fuzz::FUZZ_DIR).join("Cargo.toml");
    println!(
        "xtask: cargo check --manifest-path {} --bins",
        manifest.display()
    );
    let status = Command::new(crate::cargo())
        .arg("check")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--bins")
        .current_dir(&root)
        .status()
        .context("checking the fuzz targets")?;
    Ok(exit_code(status))
}

/// The same exit code as the child's (128 + signal when it was killed).
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Python modules (from PyPI) the tests drive, and what for.
const PYTHON_MODULES: &[(&str, &str)] = &[(
    "scramp",
    "a SCRAM-SHA-256 client written elsewhere, for the SASL tests",
)];

/// Installs the Python modules the tests need with pip, where they are missing.
fn ensure_python_modules() -> Result<(), Failure> {
    for &(module, purpose) in PYTHON_MODULES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if present {
            continue;
        }
        println!("xtask: installing the Python module {module} ({purpose})");
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                module,
            ])
            .stdin(Stdio::null())
            .status()
            .map_err(|e| Failure(format!("running pip: {e}")))?;
        if !status.success() {
            return Err(Failure(format!("pip could not install {module}")));
        }
    }
    Ok(())
}

/// `Some(true)` if installed, `Some(false)` if not, `None` without dpkg (not Debian).
fn is_installed(package: &str) -> Result<Option<bool>, Failure> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) => Ok(Some(
            output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == INSTALLED,
        )),
        Err(error) if process::is_not_found(&error) => Ok(None),
        Err(error) => Err(Failure(format!("running dpkg-query: {error}"))),
    }
}

fn missing_packages() -> Result<Option<Vec<&'static str>>, Failure> {
    let mut missing = Vec::new();
    for &(package, _) in PACKAGES {
        match is_installed(package)? {
            None => return Ok(None),
            Some(true) => {}
            Some(false) => missing.push(package),
        }
    }
    Ok(Some(missing))
}

fn ensure_packages() -> Result<(), Failure> {
    let names: Vec<&str> = PACKAGES.iter().map(|&(package, _)| package).collect();
    let Some(missing) = missing_packages()? else {
        println!(
            "xtask: no dpkg-query here, so the test packages cannot be checked; the tests need: {}",
            names.join(", ")
        );
        return Ok(());
    };
    if missing.is_empty() {
        println!("xtask: test packages present: {}", names.join(", "));
        return Ok(());
    }
    if !process::is_root() {
        return Err(Failure(format!(
            "missing Debian packages: {list}\ninstall them as root (or run `cargo xtask test` as root):\n  \
             echo '{preseed}' | debconf-set-selections\n  \
             apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {list}",
            list = missing.join(" "),
            preseed = POSTFIX_PRESEED.trim_end(),
        )));
    }
    println!("xtask: installing Debian packages the tests need:");
    for &(package, purpose) in PACKAGES {
        if missing.contains(&package) {
            println!("xtask:   {package} ({purpose})");
        }
    }
    if missing.contains(&"postfix") {
        preseed_postfix()?;
    }
    apt_get(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q"];
    install.extend(&missing);
    apt_get(&install)?;

    let still_missing = missing_packages()?.unwrap_or_default();
    if !still_missing.is_empty() {
        return Err(Failure(format!(
            "apt-get install finished but these packages are still not installed: {}",
            still_missing.join(" ")
        )));
    }
    println!("xtask: installed {}", missing.join(", "));
    Ok(())
}

fn preseed_postfix() -> Result<(), Failure> {
    let mut child = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .context("running debconf-set-selections")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(POSTFIX_PRESEED.as_bytes())
            .context("writing to debconf-set-selections")?;
    }
    let status = child.wait().context("waiting for debconf-set-selections")?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(format!("debconf-set-selections failed ({status})")))
    }
}

/// apt-get, non-interactive, waiting for the dpkg lock rather than failing on it.
fn apt_get(args: &[&str]) -> Result<(), Failure> {
    println!("xtask: apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300", "-o", "Dpkg::Use-Pty=0"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get")?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(format!(
            "apt-get {} failed ({status})",
            args.join(" ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), ExitCode::SUCCESS);
        // Wait statuses: exit code in the high byte, signal number in the low bits.
        assert_eq!(
            exit_code(ExitStatus::from_raw(101 << 8)),
            ExitCode::from(101)
        );
        assert_eq!(exit_code(ExitStatus::from_raw(9)), ExitCode::from(137));
    }

    #[test]
    fn every_package_says_what_it_is_for() {
        for &(package, purpose) in PACKAGES {
            assert!(!package.is_empty() && !purpose.is_empty());
            assert!(!package.contains(' '));
        }
        assert!(PACKAGES.iter().any(|&(package, _)| package == "postfix"));
    }
}
