//! Build script: turns the selected board file (`DRAWBRIDGE_BOARD`, default `host`) into
//! constants (`$OUT_DIR/board.rs`, included by `src/board.rs`), so that the firmware has
//! no `cfg` branch per board. `DRAWBRIDGE_IMAGE_KEYS` (hex Ed25519 public keys, comma
//! separated) names the keys whose firmware images `system update` accepts.

use std::fmt::Write as _;
use std::path::Path;

use drawbridge_image::board::{BoardFile, Link, TokenBackend};

fn main() {
    println!("cargo:rerun-if-env-changed=DRAWBRIDGE_BOARD");
    println!("cargo:rerun-if-env-changed=DRAWBRIDGE_IMAGE_KEYS");
    println!("cargo:rerun-if-changed=board");
    let name = std::env::var("DRAWBRIDGE_BOARD").unwrap_or_else(|_| "host".to_string());
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let boards = Path::new(&root).join("board");
    let path = boards.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("board '{name}': cannot read {}: {e}", path.display()));
    let board = BoardFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        board.name,
        name,
        "{}: 'name' must be the file's name",
        path.display()
    );
    let config = boards.join(&board.default_config);
    assert!(
        config.is_file(),
        "{}: default-config {} does not exist",
        path.display(),
        config.display()
    );
    let keys = std::env::var("DRAWBRIDGE_IMAGE_KEYS").unwrap_or_default();
    let keys: Vec<String> = keys
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            assert!(
                k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()),
                "DRAWBRIDGE_IMAGE_KEYS: '{k}' is not 64 hex digits"
            );
            let bytes: Vec<String> = (0..32)
                .map(|i| format!("0x{}", &k[2 * i..2 * i + 2]))
                .collect();
            format!("[{}]", bytes.join(", "))
        })
        .collect();

    let opt = |o: &Option<String>| match o {
        Some(s) => format!("Some({s:?})"),
        None => "None".to_string(),
    };
    let num = |o: Option<u64>| match o {
        Some(n) => format!("Some({n})"),
        None => "None".to_string(),
    };
    let mut out = String::new();
    let s = &board.storage;
    let (command_line, package) = match &board.kernel {
        Some(k) => (Some(k.command_line.clone()), Some(k.package.clone())),
        None => (None, None),
    };
    writeln!(
        out,
        "/// The board this firmware was built for (board/{name}.toml).
pub const BOARD: Board = Board {{
    name: {name:?},
    compatible: {compatible:?},
    target: {target:?},
    link: Link::{link},
    token: TokenBackend::{token},
    console_device: {console:?},
    console_speed: {speed},
    interfaces: &{interfaces:?},
    data_device: {data_device},
    data_mount: {data_mount},
    state_dir: {state_dir:?},
    firmware_slots: {slots},
    kernel_package: {package},
    kernel_command_line: {command_line},
    watchdog_device: {watchdog},
    budget: Budget {{ binary: {b_bin}, kernel: {b_kernel}, initramfs: {b_initramfs}, image: {b_image} }},
}};

/// The board's factory configuration ({config_name}), as `set` lines.
pub const DEFAULT_CONFIG: &str = include_str!({config_path:?});

/// The Ed25519 public keys whose firmware images this build installs.
pub const TRUSTED_IMAGE_KEYS: &[[u8; 32]] = &[{keys}];",
        compatible = board.compatible,
        target = board.target,
        link = match board.link {
            Link::Static => "Static",
            Link::Dynamic => "Dynamic",
        },
        token = match board.token {
            TokenBackend::Soft => "Soft",
            TokenBackend::Pkcs11 => "Pkcs11",
        },
        console = board.console_device,
        speed = board.console_speed,
        interfaces = board.interfaces,
        data_device = opt(&s.data_device),
        data_mount = opt(&s.data_mount),
        state_dir = s.state_dir,
        slots = opt(&s.firmware_slots),
        package = opt(&package),
        command_line = opt(&command_line),
        watchdog = opt(&board.watchdog_device),
        b_bin = num(board.budget.binary),
        b_kernel = num(board.budget.kernel),
        b_initramfs = num(board.budget.initramfs),
        b_image = num(board.budget.image),
        config_name = board.default_config,
        config_path = config.display().to_string(),
        keys = keys.join(", "),
    )
    .expect("writing to a String");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out_dir).join("board.rs"), out).expect("write board.rs");
}
