//! The `qemu-x86_64` board's virtual machine as a QEMU command line, shared by
//! `cargo xtask qemu` and the image tests so that both boot the same machine: software
//! emulation, the kernel and initramfs given directly (`-kernel`/`-initrd`), the serial
//! console on the first UART, a virtio data disk, a virtio NIC on QEMU's user network
//! with host ports forwarded from 127.0.0.1 only, a virtio entropy source and an Intel
//! 6300ESB watchdog (which resets the machine, QEMU's default action).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The emulator binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// Guest memory: the firmware needs a few MiB; the kernel and initramfs some more.
pub const MEMORY_MIB: u32 = 512;
/// The guest's own address on QEMU's user network, and the address that reaches the
/// host's loopback (QEMU's documented defaults).
pub const GUEST_ADDRESS: &str = "10.0.2.15";
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// Where the serial console goes.
#[derive(Clone, Debug)]
pub enum Serial {
    /// The terminal QEMU runs on (with its monitor on Ctrl-A c).
    Terminal,
    /// A file, appended to.
    File(PathBuf),
    /// A Unix socket QEMU listens on, for a program to type at the console, with
    /// everything the guest writes also in `log` (started afresh at each start).
    Socket { socket: PathBuf, log: PathBuf },
}

/// One machine to start.
#[derive(Clone, Debug)]
pub struct Machine {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub command_line: String,
    /// A raw disk image: the data disk.
    pub disk: PathBuf,
    /// QEMU's `cache=` mode for the data disk (`none`, `directsync`, `writeback`).
    pub disk_cache: String,
    /// (host port on 127.0.0.1, guest port) pairs.
    pub forwards: Vec<(u16, u16)>,
    pub serial: Serial,
    /// A UNIX socket for QEMU's human monitor (`sendkey`, `system_powerdown`).
    pub monitor: Option<PathBuf>,
    /// A restart of the guest ends QEMU instead of resetting the machine.
    pub restart_exits: bool,
}

fn os(s: impl AsRef<std::ffi::OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

fn path_arg(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path.as_os_str());
    s
}

impl Machine {
    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = [
            "-machine",
            "q35,accel=tcg",
            "-cpu",
            "max",
            "-m",
            &MEMORY_MIB.to_string(),
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ]
        .iter()
        .map(os)
        .collect();
        a.push(os("-kernel"));
        a.push(os(&self.kernel));
        a.push(os("-initrd"));
        a.push(os(&self.initramfs));
        a.push(os("-append"));
        a.push(os(&self.command_line));
        a.push(os("-drive"));
        let mut drive = path_arg("file=", &self.disk);
        drive.push(format!(",format=raw,if=virtio,cache={}", self.disk_cache));
        a.push(drive);
        let mut netdev = String::from("user,id=net0");
        for (host, guest) in &self.forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        a.extend(
            [
                "-netdev",
                &netdev,
                "-device",
                "virtio-net-pci,netdev=net0",
                "-device",
                "virtio-rng-pci",
                "-device",
                "i6300esb",
            ]
            .iter()
            .map(os),
        );
        match &self.serial {
            Serial::Terminal => a.extend(["-serial", "mon:stdio"].iter().map(os)),
            Serial::File(path) => {
                a.push(os("-serial"));
                a.push(path_arg("file:", path));
            }
            Serial::Socket { socket, log } => {
                a.push(os("-chardev"));
                let mut c = path_arg("socket,id=serial0,server=on,wait=off,path=", socket);
                c.push(path_arg(",logfile=", log));
                a.push(c);
                a.extend(["-serial", "chardev:serial0"].iter().map(os));
            }
        }
        if self.restart_exits {
            a.push(os("-no-reboot"));
        }
        if let Some(sock) = &self.monitor {
            a.push(os("-monitor"));
            let mut m = path_arg("unix:", sock);
            m.push(",server=on,wait=off");
            a.push(m);
        }
        a
    }
}

/// Writes the kernel and initramfs sections of the image at `image` into `dir` (as
/// `kernel` and `initramfs`) for `-kernel` and `-initrd`; returns their paths.
pub fn extract(image: &Path, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    use crate::format::{self, SectionKind};
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let parsed = format::parse(&bytes).map_err(|e| format!("{}: {e}", image.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |kind: SectionKind| -> Result<PathBuf, String> {
        // INVARIANT: parse checked that every kind is present.
        let section = parsed
            .section(kind)
            .expect("parsed images have every section");
        let path = dir.join(kind.name());
        std::fs::write(&path, parsed.bytes(&bytes, section))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    Ok((write(SectionKind::Kernel)?, write(SectionKind::Initramfs)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test machine with `serial`, its arguments as strings.
    fn args_with(serial: Serial) -> Vec<String> {
        let m = Machine {
            kernel: "k".into(),
            initramfs: "i".into(),
            command_line: "console=ttyS0".into(),
            disk: "d.img".into(),
            disk_cache: "none".into(),
            forwards: vec![(2525, 25), (2587, 587)],
            serial,
            monitor: Some("m.sock".into()),
            restart_exits: true,
        };
        m.args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_socket_console_is_logged_too() {
        let args = args_with(Serial::Socket {
            socket: "c.sock".into(),
            log: "s.log".into(),
        });
        let at = args.iter().position(|a| a == "-chardev").unwrap();
        assert_eq!(
            args[at + 1],
            "socket,id=serial0,server=on,wait=off,path=c.sock,logfile=s.log"
        );
        assert!(args.windows(2).any(|w| w == ["-serial", "chardev:serial0"]));
    }

    #[test]
    fn forwards_bind_loopback_only() {
        let args = args_with(Serial::File("s.log".into()));
        let net = args.iter().find(|a| a.starts_with("user,")).unwrap();
        assert_eq!(
            net,
            "user,id=net0,hostfwd=tcp:127.0.0.1:2525-:25,hostfwd=tcp:127.0.0.1:2587-:587"
        );
        assert!(args.contains(&"file=d.img,format=raw,if=virtio,cache=none".to_string()));
        assert!(args.contains(&"file:s.log".to_string()));
        assert!(args.contains(&"unix:m.sock,server=on,wait=off".to_string()));
        assert!(args.contains(&"q35,accel=tcg".to_string()));
        assert!(args.contains(&"-no-reboot".to_string()));
    }
}
