//! Boards are data: every board file parses, names a default configuration that exists
//! and parses, and the firmware's constants are the selected board's (host by default).

use std::path::Path;

use drawbridge_image::board::{BoardFile, Link};

fn boards() -> Vec<(String, BoardFile)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("board");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let board =
                BoardFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((stem, board));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_board_parses_and_names_a_default_configuration_that_parses() {
    let boards = boards();
    let names: Vec<&str> = boards.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["host", "qemu-x86_64"]);
    for (stem, board) in &boards {
        assert_eq!(&board.name, stem, "a board's name is its file's name");
        let config = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("board")
            .join(&board.default_config);
        let text = std::fs::read_to_string(&config)
            .unwrap_or_else(|e| panic!("{stem}: {}: {e}", config.display()));
        let parsed = drawbridge::proto::config::text::parse(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        for name in parsed.interfaces.keys() {
            assert!(
                board.interfaces.contains(name),
                "{stem}: the configuration names interface {name}, which the board lacks"
            );
        }
        if board.link == Link::Static {
            let kernel = board
                .kernel
                .as_ref()
                .expect("a static board boots a kernel");
            assert!(kernel.command_line.contains(&board.console_device[5..]));
            assert!(board.storage.data_device.is_some());
        }
    }
}

#[test]
fn the_firmware_is_built_for_the_host_board_by_default() {
    let host = &boards()[0].1;
    let b = drawbridge::board::BOARD;
    assert_eq!(b.name, host.name);
    assert_eq!(b.compatible, host.compatible);
    assert_eq!(b.state_dir, host.storage.state_dir);
    assert_eq!(b.link, Link::Dynamic);
    assert_eq!(b.console_device, "stdin");
    assert_eq!(b.firmware_slots, None);
    assert_eq!(
        drawbridge::board::default_config(),
        drawbridge::proto::config::host_default()
    );
}
