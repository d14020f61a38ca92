//! `cargo xtask build-image`, `verify-image` and `qemu`: the signed firmware image of a
//! board, and booting it under QEMU.
//!
//! xtask lays the image out (with the std-only `drawbridge-image` crate) and leaves the
//! crypto to the firmware's own code: a host build of `drawbridge` generates the
//! development key, hashes the sections, signs (`drawbridge image seal`) and verifies
//! (`drawbridge image verify`), all through its token.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use drawbridge_image::board::{BoardFile, Kernel, Link};
use drawbridge_image::cpio::{Archive, Node};
use drawbridge_image::format::{self, Metadata, SectionKind};
use drawbridge_image::initramfs;
use drawbridge_image::qemu::{self, Machine, Serial};

use crate::{Context, Failure};

/// `build-image` options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    pub board: String,
    /// A production signing key (PKCS#8); none: the development key under target/.
    pub key: Option<PathBuf>,
}

/// `verify-image` options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    pub file: PathBuf,
    pub board: String,
    /// A hex public key file; none: the development key's.
    pub public_key: Option<PathBuf>,
}

/// `qemu` options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QemuOptions {
    pub board: String,
    pub image: Option<PathBuf>,
    pub disk: Option<PathBuf>,
    pub smtp_port: u16,
    pub submission_port: u16,
}

/// The board when none is named: the one appliance board there is.
pub const DEFAULT_BOARD: &str = "qemu-x86_64";
/// The size of the data disk `cargo xtask qemu` creates when there is none: 256 MiB.
const DISK_SIZE: u64 = 256 << 20;

fn value(it: &mut std::slice::Iter<'_, String>, name: &str) -> Result<String, String> {
    it.next()
        .cloned()
        .ok_or_else(|| format!("{name} needs a value"))
}

impl BuildOptions {
    pub fn parse(args: &[String]) -> Result<BuildOptions, String> {
        let mut o = BuildOptions {
            board: DEFAULT_BOARD.into(),
            key: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--board" => o.board = value(&mut it, "--board")?,
                "--key" => o.key = Some(value(&mut it, "--key")?.into()),
                other => return Err(format!("build-image: unknown option `{other}`")),
            }
        }
        Ok(o)
    }
}

impl VerifyOptions {
    pub fn parse(args: &[String]) -> Result<VerifyOptions, String> {
        let mut o = VerifyOptions {
            board: DEFAULT_BOARD.into(),
            ..VerifyOptions::default()
        };
        let mut file = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--board" => o.board = value(&mut it, "--board")?,
                "--public-key" => o.public_key = Some(value(&mut it, "--public-key")?.into()),
                other if other.starts_with('-') => {
                    return Err(format!("verify-image: unknown option `{other}`"));
                }
                other if file.is_none() => file = Some(PathBuf::from(other)),
                other => return Err(format!("verify-image: unexpected `{other}`")),
            }
        }
        o.file = file.ok_or("verify-image needs the image file")?;
        Ok(o)
    }
}

impl QemuOptions {
    pub fn parse(args: &[String]) -> Result<QemuOptions, String> {
        let mut o = QemuOptions {
            board: DEFAULT_BOARD.into(),
            smtp_port: 2525,
            submission_port: 2587,
            ..QemuOptions::default()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let port = |v: String| v.parse::<u16>().map_err(|_| format!("bad port `{v}`"));
            match a.as_str() {
                "--board" => o.board = value(&mut it, "--board")?,
                "--image" => o.image = Some(value(&mut it, "--image")?.into()),
                "--disk" => o.disk = Some(value(&mut it, "--disk")?.into()),
                "--smtp-port" => o.smtp_port = port(value(&mut it, "--smtp-port")?)?,
                "--submission-port" => {
                    o.submission_port = port(value(&mut it, "--submission-port")?)?
                }
                other => return Err(format!("qemu: unknown option `{other}`")),
            }
        }
        Ok(o)
    }
}

fn read_board(root: &Path, name: &str) -> Result<BoardFile, Failure> {
    let path = root.join("board").join(format!("{name}.toml"));
    let text = fs::read_to_string(&path).context(format!("reading {}", path.display()))?;
    BoardFile::parse(&text).map_err(|e| Failure(format!("{}: {e}", path.display())))
}

/// Where a board's images and run files go.
fn out_dir(root: &Path, board: &str) -> PathBuf {
    crate::target_dir(root).join("image").join(board)
}

fn dev_key(root: &Path) -> PathBuf {
    crate::target_dir(root)
        .join("image")
        .join("dev-signing-key.pk8")
}

fn dev_public_key(root: &Path) -> PathBuf {
    crate::target_dir(root)
        .join("image")
        .join("dev-signing-key.pub")
}

/// Runs a command and returns its standard output; a failure quotes its error output.
fn output(command: &mut Command, doing: &str) -> Result<String, Failure> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .context(format!("{doing}: starting"))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{doing} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(command: &mut Command, doing: &str) -> Result<(), Failure> {
    let status = command.status().context(format!("{doing}: starting"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(format!("{doing} failed ({status})")))
    }
}

/// The host build of `drawbridge` that does the image crypto.
fn image_tool(root: &Path) -> Result<PathBuf, Failure> {
    run(
        Command::new(crate::cargo())
            .args([
                "build",
                "--quiet",
                "--package",
                "drawbridge",
                "--bin",
                "drawbridge",
            ])
            .env_remove("DRAWBRIDGE_BOARD")
            .env_remove("DRAWBRIDGE_IMAGE_KEYS")
            .current_dir(root),
        "building the host drawbridge for the image crypto",
    )?;
    Ok(crate::target_dir(root).join("debug").join("drawbridge"))
}

/// The firmware version: `version` in the root manifest's `[package]`.
fn version(root: &Path) -> Result<String, Failure> {
    let text = fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "version").then(|| v.trim().trim_matches('"').to_string())
        })
        .ok_or_else(|| Failure::new("Cargo.toml has no version"))
}

/// The commit and its time; `unknown` and 0 outside a git checkout.
fn commit(root: &Path) -> (String, u64, bool) {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let hash = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let time = git(&["log", "-1", "--format=%ct"])
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (hash, time, dirty)
}

/// The build time: `SOURCE_DATE_EPOCH` if set (reproducible-builds.org), else the
/// commit's time, so that the same commit gives the same image.
fn build_time(commit_time: u64) -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| Failure(format!("SOURCE_DATE_EPOCH `{v}` is not a number"))),
        Err(_) => Ok(commit_time),
    }
}

/// Checks a size against its budget.
pub fn check_budget(what: &str, size: u64, budget: Option<u64>) -> Result<(), Failure> {
    match budget {
        Some(max) if size > max => Err(Failure(format!(
            "{what} is {size} bytes, over the board's budget of {max}"
        ))),
        _ => Ok(()),
    }
}

pub fn build(o: &BuildOptions) -> Result<ExitCode, Failure> {
    let root = crate::workspace_root();
    let path = build_image(&root, o)?;
    println!("xtask: wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds the image and returns its path.
pub fn build_image(root: &Path, o: &BuildOptions) -> Result<PathBuf, Failure> {
    let board = read_board(root, &o.board)?;
    let kernel = board.kernel.clone().ok_or_else(|| {
        Failure(format!(
            "board {} boots no kernel of its own: it has no image",
            board.name
        ))
    })?;
    if board.link != Link::Static {
        return Err(Failure(format!(
            "board {}: an image's /init must be linked statically",
            board.name
        )));
    }
    let out = out_dir(root, &board.name);
    fs::create_dir_all(&out).context(format!("creating {}", out.display()))?;
    let tool = image_tool(root)?;
    let key = match &o.key {
        Some(k) => k.clone(),
        None => {
            let k = dev_key(root);
            if !k.exists() {
                output(
                    Command::new(&tool).args(["image", "keygen"]).arg(&k),
                    "generating the development signing key",
                )?;
                println!(
                    "xtask: generated a development signing key in {}",
                    k.display()
                );
            }
            k
        }
    };
    let public = output(
        Command::new(&tool).args(["image", "public-key"]).arg(&key),
        "reading the signing key",
    )?
    .trim()
    .to_string();
    if o.key.is_none() {
        fs::write(dev_public_key(root), format!("{public}\n")).context("writing the public key")?;
    }
    let (commit, commit_time, dirty) = commit(root);
    let epoch = build_time(commit_time)?;
    let binary = build_static(root, &board, &public)?;
    check_budget(
        "the firmware binary",
        binary.len() as u64,
        board.budget.binary,
    )?;

    let cache = crate::target_dir(root).join("image").join("cache");
    let (package, package_version, tree) = kernel_package(&cache, &kernel.package)?;
    let release = package.trim_start_matches("linux-image-").to_string();
    let vmlinuz = fs::read(tree.join("boot").join(format!("vmlinuz-{release}")))
        .context("reading the kernel")?;
    check_budget("the kernel", vmlinuz.len() as u64, board.budget.kernel)?;

    let mut archive = Archive::new();
    archive.add(initramfs::INIT, Node::File(binary), 0o755);
    archive.add("dev/console", Node::CharDevice(5, 1), 0o600);
    for dir in ["proc", "sys", "dev", "tmp"] {
        archive.add(dir, Node::Directory, 0o755);
    }
    let modules = modules(&tree.join("lib/modules").join(&release), &kernel)?;
    let mut order = String::from("# Kernel modules in load order, dependencies first.\n");
    for (file, bytes) in modules {
        order.push_str(&file);
        order.push('\n');
        archive.add(
            &format!("{}/{file}", initramfs::MODULE_DIR),
            Node::File(bytes),
            0o644,
        );
    }
    archive.add(
        initramfs::MODULE_ORDER,
        Node::File(order.into_bytes()),
        0o644,
    );
    for (path, bytes) in tools(&kernel.tools)? {
        archive.add(&path, Node::File(bytes), 0o755);
    }
    let mtime = u32::try_from(epoch).unwrap_or(u32::MAX);
    let initramfs = archive.write(mtime);
    check_budget(
        "the initramfs",
        initramfs.len() as u64,
        board.budget.initramfs,
    )?;

    let config_path = root.join("board").join(&board.default_config);
    let config = fs::read(&config_path).context(format!("reading {}", config_path.display()))?;

    let rustc = output(Command::new("rustc").arg("-V"), "rustc -V")?;
    let mut build = format!(
        "rustc={}\nkernel={package} {package_version}\ntarget={}\nlink=static\n",
        rustc.trim(),
        board.target
    );
    if dirty {
        build.push_str("tree=modified\n");
    }
    let metadata = Metadata {
        board: board.compatible.clone(),
        version: version(root)?,
        commit,
        build_time: epoch,
        build,
    };
    let mut bytes = format::assemble(
        &metadata,
        &[
            (SectionKind::Kernel, &vmlinuz),
            (SectionKind::Initramfs, &initramfs),
            (SectionKind::FactoryConfig, &config),
        ],
    )
    .map_err(|e| Failure(format!("laying out the image: {e}")))?;
    check_budget("the image", bytes.len() as u64, board.budget.image)?;
    let path = out.join(format!("drawbridge-{}.img", metadata.version));
    let tmp = path.with_extension("img.unsealed");
    fs::write(&tmp, &bytes).context(format!("writing {}", tmp.display()))?;
    output(
        Command::new(&tool)
            .args(["image", "seal", "--key"])
            .arg(&key)
            .arg(&tmp),
        "sealing the image",
    )?;
    bytes = fs::read(&tmp).context("reading the sealed image")?;
    fs::write(&path, &bytes).context(format!("writing {}", path.display()))?;
    let _ = fs::remove_file(&tmp);
    Ok(path)
}

/// Builds the static firmware for the board and returns its bytes, after checking that
/// it has no program interpreter and holds none of this machine's paths.
fn build_static(root: &Path, board: &BoardFile, public_key: &str) -> Result<Vec<u8>, Failure> {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|_| PathBuf::from("/root/.cargo"));
    let rustup = std::env::var("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".rustup")))
        .unwrap_or_else(|_| PathBuf::from("/root/.rustup"));
    let flags = [
        "-C".to_string(),
        "target-feature=+crt-static".to_string(),
        format!("--remap-path-prefix={}=/drawbridge", root.display()),
        format!("--remap-path-prefix={}=/cargo", home.display()),
        format!("--remap-path-prefix={}=/rustup", rustup.display()),
    ];
    println!(
        "xtask: building the static firmware for {} (release, {})",
        board.name, board.target
    );
    run(
        Command::new(crate::cargo())
            .args([
                "build",
                "--release",
                "--package",
                "drawbridge",
                "--bin",
                "drawbridge",
            ])
            .args(["--target", &board.target])
            .env("DRAWBRIDGE_BOARD", &board.name)
            .env("DRAWBRIDGE_IMAGE_KEYS", public_key)
            .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"))
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .env_remove("RUSTFLAGS")
            .current_dir(root),
        "building the static firmware",
    )?;
    let path = crate::target_dir(root)
        .join(&board.target)
        .join("release")
        .join("drawbridge");
    let binary = fs::read(&path).context(format!("reading {}", path.display()))?;
    if has_interpreter(&binary) {
        return Err(Failure(format!(
            "{} asks for a program interpreter: it is not static",
            path.display()
        )));
    }
    for machine_path in [root, &home, &rustup] {
        let needle = machine_path.display().to_string();
        if !needle.is_empty() && find(&binary, needle.as_bytes()) {
            return Err(Failure(format!(
                "the firmware binary contains the build machine's path {needle}"
            )));
        }
    }
    Ok(binary)
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header.
pub fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(elf, 0x20), u16_at(elf, 0x36), u16_at(elf, 0x38))
    else {
        return true;
    };
    (0..u64::from(phnum))
        .any(|i| u32_at(elf, (phoff + i * u64::from(phentsize)) as usize) == Some(PT_INTERP))
}

/// The `.modinfo` section of a 64-bit little-endian ELF module, as its NUL-separated
/// `key=value` strings.
pub fn modinfo(elf: &[u8]) -> Option<Vec<String>> {
    if elf.get(..4)? != b"\x7fELF" || elf.get(4)? != &2 {
        return None;
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let shstrndx = u16_at(elf, 0x3e)? as usize;
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let names_at = u64_at(elf, header(shstrndx)? + 0x18)? as usize;
    for i in 0..shnum {
        let h = header(i)?;
        let name_at = names_at.checked_add(u32_at(elf, h)? as usize)?;
        let name = elf.get(name_at..)?.split(|&b| b == 0).next()?;
        if name == b".modinfo" {
            let offset = u64_at(elf, h + 0x18)? as usize;
            let size = u64_at(elf, h + 0x20)? as usize;
            let data = elf.get(offset..offset.checked_add(size)?)?;
            return Some(
                data.split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            );
        }
    }
    None
}

/// A module's name as modprobe compares them: `-` and `_` are the same.
fn module_name(s: &str) -> String {
    s.replace('-', "_")
}

/// The board's modules and their dependencies, dependencies first: (file name, bytes).
fn modules(dir: &Path, kernel: &Kernel) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let builtin: BTreeSet<String> = fs::read_to_string(dir.join("modules.builtin"))
        .context("reading modules.builtin")?
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|f| module_name(f.trim_end_matches(".ko")))
        .collect();
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).context(format!("reading {}", d.display()))? {
            let path = entry.context("reading the module tree")?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                index.insert(module_name(stem), path);
            }
        }
    }
    let mut ordered: Vec<(String, Vec<u8>)> = Vec::new();
    let mut done = BTreeSet::new();
    for name in &kernel.modules {
        visit(
            &module_name(name),
            &index,
            &builtin,
            &mut done,
            &mut ordered,
            0,
        )?;
    }
    Ok(ordered)
}

/// Deepest dependency chain followed: far above any real one, a guard against loops.
const MAX_MODULE_DEPTH: usize = 32;

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    done: &mut BTreeSet<String>,
    ordered: &mut Vec<(String, Vec<u8>)>,
    depth: usize,
) -> Result<(), Failure> {
    if done.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if depth > MAX_MODULE_DEPTH {
        return Err(Failure(format!("module dependencies loop at {name}")));
    }
    let path = index
        .get(name)
        .ok_or_else(|| Failure(format!("kernel module {name} is not in the kernel package")))?;
    let bytes = fs::read(path).context(format!("reading {}", path.display()))?;
    let info =
        modinfo(&bytes).ok_or_else(|| Failure(format!("{}: no .modinfo", path.display())))?;
    let depends = info
        .iter()
        .find_map(|s| s.strip_prefix("depends="))
        .unwrap_or("");
    for dep in depends.split(',').filter(|d| !d.is_empty()) {
        visit(&module_name(dep), index, builtin, done, ordered, depth + 1)?;
    }
    done.insert(name.to_string());
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ordered.push((file, bytes));
    Ok(())
}

/// The board's tools and the shared libraries they load, at their own paths.
fn tools(tools: &[String]) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let mut files = BTreeMap::new();
    for tool in tools {
        files.insert(
            tool.clone(),
            fs::read(tool).context(format!("reading {tool}"))?,
        );
        let ldd = output(Command::new("ldd").arg(tool), &format!("ldd {tool}"))?;
        for line in ldd.lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                files.insert(p.to_string(), fs::read(p).context(format!("reading {p}"))?);
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// Fetches a Debian kernel package (resolving the `linux-image-amd64` metapackage to the
/// versioned package it depends on) into the cache and unpacks it once. Returns the
/// package, its version and the unpacked tree. Nothing is installed on this machine.
fn kernel_package(cache: &Path, name: &str) -> Result<(String, String, PathBuf), Failure> {
    fs::create_dir_all(cache).context("creating the package cache")?;
    let deb = download(cache, name)?;
    let depends = output(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Depends"),
        "reading the kernel metapackage",
    )?;
    let package = depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-"))
        .unwrap_or(name)
        .to_string();
    let deb = if package == name {
        deb
    } else {
        download(cache, &package)?
    };
    let version = output(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Version"),
        "reading the kernel package's version",
    )?
    .trim()
    .to_string();
    let tree = cache.join(format!("{package}_{version}"));
    let done = tree.join(".unpacked");
    if !done.exists() {
        let _ = fs::remove_dir_all(&tree);
        println!("xtask: unpacking {package} {version}");
        run(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
            "unpacking the kernel package",
        )?;
        fs::write(&done, b"").context("marking the unpacked kernel")?;
    }
    Ok((package, version, tree))
}

/// `apt-get download NAME` into `cache` unless a .deb of it is there already (running
/// `apt-get update` once if the package lists do not know it).
fn download(cache: &Path, name: &str) -> Result<PathBuf, Failure> {
    let find = || -> Option<PathBuf> {
        let prefix = format!("{name}_");
        let mut found: Vec<PathBuf> = fs::read_dir(cache)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .collect();
        found.sort();
        found.pop()
    };
    if let Some(deb) = find() {
        return Ok(deb);
    }
    println!("xtask: apt-get download {name}");
    let attempt = || {
        Command::new("apt-get")
            .args(["download", "-q", name])
            .current_dir(cache)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !attempt() {
        run(
            Command::new("apt-get")
                .args(["update", "-q"])
                .stdin(Stdio::null()),
            "apt-get update",
        )?;
        if !attempt() {
            return Err(Failure(format!("apt-get download {name} failed")));
        }
    }
    find().ok_or_else(|| Failure(format!("apt-get download {name} left no .deb")))
}

pub fn verify(o: &VerifyOptions) -> Result<ExitCode, Failure> {
    let root = crate::workspace_root();
    let board = read_board(&root, &o.board)?;
    let tool = image_tool(&root)?;
    let public = o
        .public_key
        .clone()
        .unwrap_or_else(|| dev_public_key(&root));
    let status = Command::new(&tool)
        .args(["image", "verify"])
        .arg(&o.file)
        .args(["--board", &board.compatible, "--public-key"])
        .arg(&public)
        .status()
        .context("running drawbridge image verify")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn qemu(o: &QemuOptions) -> Result<ExitCode, Failure> {
    let root = crate::workspace_root();
    let board = read_board(&root, &o.board)?;
    let kernel = board
        .kernel
        .ok_or_else(|| Failure(format!("board {} does not boot under QEMU", board.name)))?;
    let out = out_dir(&root, &board.name);
    let image = match &o.image {
        Some(p) => p.clone(),
        None => build_image(
            &root,
            &BuildOptions {
                board: board.name.clone(),
                key: None,
            },
        )?,
    };
    let (kernel_file, initramfs_file) = qemu::extract(&image, &out.join("run")).map_err(Failure)?;
    let disk = o.disk.clone().unwrap_or_else(|| out.join("data.img"));
    if !disk.exists() {
        // A raw disk is a file of the disk's size; sparse, it costs nothing until written.
        fs::File::create(&disk)
            .and_then(|f| f.set_len(DISK_SIZE))
            .context(format!("creating {}", disk.display()))?;
        println!(
            "xtask: created a blank data disk {} (formatted at first boot)",
            disk.display()
        );
    }
    let machine = Machine {
        kernel: kernel_file,
        initramfs: initramfs_file,
        command_line: kernel.command_line,
        disk,
        disk_cache: "writeback".into(),
        forwards: vec![(o.smtp_port, 25), (o.submission_port, 587)],
        serial: Serial::Terminal,
        monitor: None,
        restart_exits: false,
    };
    println!(
        "xtask: booting {} (inbound on 127.0.0.1:{}, outbound on 127.0.0.1:{}; Ctrl-A X quits)",
        image.display(),
        o.smtp_port,
        o.submission_port
    );
    let status = Command::new(qemu::QEMU)
        .args(machine.args())
        .status()
        .context("running qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse() {
        assert_eq!(
            BuildOptions::parse(&args("--board qemu-x86_64 --key k.pk8")),
            Ok(BuildOptions {
                board: "qemu-x86_64".into(),
                key: Some("k.pk8".into())
            })
        );
        assert_eq!(BuildOptions::parse(&[]).unwrap().board, DEFAULT_BOARD);
        assert!(BuildOptions::parse(&args("--flash")).is_err());
        let v = VerifyOptions::parse(&args("x.img --board host")).unwrap();
        assert_eq!((v.file, v.board), ("x.img".into(), "host".into()));
        assert!(VerifyOptions::parse(&[]).is_err());
        let q = QemuOptions::parse(&args("--smtp-port 3525")).unwrap();
        assert_eq!((q.smtp_port, q.submission_port), (3525, 2587));
        assert!(QemuOptions::parse(&args("--smtp-port x")).is_err());
    }

    #[test]
    fn budgets_are_enforced() {
        assert!(check_budget("x", 10, Some(10)).is_ok());
        assert!(check_budget("x", 10, None).is_ok());
        let e = check_budget("the kernel", 11, Some(10)).unwrap_err();
        assert_eq!(e.0, "the kernel is 11 bytes, over the board's budget of 10");
    }

    #[test]
    fn elf_readers_on_this_machines_binaries() {
        // xtask itself is dynamically linked: it has an interpreter.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(has_interpreter(b"not an elf"));
        assert_eq!(modinfo(b"not an elf"), None);
        assert_eq!(modinfo(&me), None);
    }
}

/// `bench boot` options.
#[derive(Debug, PartialEq, Eq)]
pub struct BootBenchOptions {
    pub board: String,
    /// Boots after the first one (which formats the data disk).
    pub boots: usize,
}

impl BootBenchOptions {
    pub fn parse(args: &[String]) -> Result<BootBenchOptions, String> {
        let mut o = BootBenchOptions {
            board: DEFAULT_BOARD.into(),
            boots: 3,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--board" => o.board = value(&mut it, "--board")?,
                "--boots" => {
                    let v = value(&mut it, "--boots")?;
                    o.boots = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or(format!("--boots needs a positive number, not `{v}`"))?;
                }
                other => return Err(format!("bench boot: unknown option `{other}`")),
            }
        }
        Ok(o)
    }
}

/// Longest wait for one boot: software emulation on a loaded machine.
const BOOT_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Starts the machine and returns the seconds from QEMU's start until the inbound service
/// greets through the forwarded port; the machine is killed afterwards.
fn time_boot(machine: &Machine, port: u16) -> Result<f64, Failure> {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let mut child = crate::process::Guarded::spawn(
        qemu::QEMU,
        Command::new(qemu::QEMU)
            .args(machine.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )?;
    loop {
        child.check_running()?;
        crate::process::check_interrupted()?;
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut greeting = [0u8; 4];
            if s.read_exact(&mut greeting).is_ok() && &greeting == b"220 " {
                let seconds = start.elapsed().as_secs_f64();
                child.stop();
                return Ok(seconds);
            }
        }
        if start.elapsed() > BOOT_LIMIT {
            return Err(Failure::new("the guest did not greet within 300 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cargo xtask bench boot`: boot-to-SMTP-ready time under QEMU (software emulation),
/// first boot (formats the data disk) and later boots, and the image's size.
pub fn bench_boot(o: &BootBenchOptions) -> Result<ExitCode, Failure> {
    crate::process::catch_interrupts();
    let root = crate::workspace_root();
    let board = read_board(&root, &o.board)?;
    let kernel = board
        .kernel
        .clone()
        .ok_or_else(|| Failure(format!("board {} does not boot under QEMU", board.name)))?;
    let image = build_image(
        &root,
        &BuildOptions {
            board: board.name.clone(),
            key: None,
        },
    )?;
    let size = fs::metadata(&image).context("reading the image")?.len();
    let bench = crate::target_dir(&root).join("bench");
    let (kernel_file, initramfs_file) =
        qemu::extract(&image, &bench.join("boot")).map_err(Failure)?;
    let disk = bench.join("boot-data.img");
    let _ = fs::remove_file(&disk);
    fs::File::create(&disk)
        .and_then(|f| f.set_len(DISK_SIZE))
        .context("creating the data disk")?;
    let [port] = crate::process::free_ports::<1>()?;
    let machine = Machine {
        kernel: kernel_file,
        initramfs: initramfs_file,
        command_line: kernel.command_line,
        disk,
        disk_cache: "none".into(),
        forwards: vec![(port, 25)],
        serial: Serial::File(bench.join("boot-serial.log")),
        monitor: None,
        restart_exits: true,
    };
    let first = time_boot(&machine, port)?;
    println!("xtask: first boot (formats the data disk): {first:.1} s to SMTP ready");
    let mut later = Vec::new();
    for i in 0..o.boots {
        let s = time_boot(&machine, port)?;
        println!("xtask: boot {}: {s:.1} s to SMTP ready", i + 2);
        later.push(s);
    }
    later.sort_by(f64::total_cmp);
    let median = later[later.len() / 2];
    println!(
        "xtask: {}: {size} bytes; boot to SMTP ready: first {first:.1} s, median of {} later boots {median:.1} s",
        image.display(),
        later.len()
    );
    let json = format!(
        "{{\"board\": \"{}\", \"image_bytes\": {size}, \"first_boot_s\": {first:.2}, \"boot_s\": {median:.2}, \"boots\": {}}}\n",
        board.name,
        later.len()
    );
    let path = bench.join("boot.json");
    fs::write(&path, json).context(format!("writing {}", path.display()))?;
    println!("xtask: wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
