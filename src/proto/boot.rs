//! PID 1's decisions, without I/O: what a signal asks for, whether the data disk needs
//! formatting, which configuration to boot with, what to do with the network, and how
//! long to wait before starting a crashed gateway again.

use std::net::IpAddr;
use std::time::Duration;

use crate::proto::config::{Config, InterfaceAddress};

/// How the machine stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    PowerOff,
    Restart,
}

/// What a signal to PID 1 asks for, following the conventions Linux init systems share
/// (busybox init's): SIGTERM and SIGINT (the kernel's Ctrl-Alt-Del once
/// `reboot(LINUX_REBOOT_CMD_CAD_OFF)` is set) restart; SIGUSR1, SIGUSR2 and SIGPWR
/// (a UPS daemon's power failure) power off.
pub fn signal_request(signal: i32) -> Option<Shutdown> {
    match signal {
        libc::SIGTERM | libc::SIGINT => Some(Shutdown::Restart),
        libc::SIGUSR1 | libc::SIGUSR2 | libc::SIGPWR => Some(Shutdown::PowerOff),
        _ => None,
    }
}

/// The signal that asks PID 1 for `kind`: what the console's `restart` and power-off
/// send.
pub fn signal_for(kind: Shutdown) -> i32 {
    match kind {
        Shutdown::Restart => libc::SIGTERM,
        Shutdown::PowerOff => libc::SIGUSR2,
    }
}

/// Where the ext2/3/4 superblock's magic number lies on the disk: the superblock starts
/// at byte 1024, the magic `0xEF53` (little endian) is its field at offset 56.
pub const EXT_MAGIC_OFFSET: usize = 1024 + 56;
/// How many bytes of the disk [`needs_format`] looks at.
pub const PROBE_LEN: usize = EXT_MAGIC_OFFSET + 2;

/// Whether the data disk must be formatted: it holds no ext2/3/4 file system. A disk
/// with one is never formatted, whatever else is wrong with it (the kernel's journal
/// replay repairs an interrupted write; anything worse is for a person to look at).
pub fn needs_format(head: &[u8]) -> bool {
    head.get(EXT_MAGIC_OFFSET..PROBE_LEN) != Some(&[0x53, 0xef])
}

/// The file on the data disk whose `set` lines replace the factory configuration at
/// boot, relative to the state directory. This is the initial configuration the
/// stored-configuration slots (`config/` in the state directory) start from.
pub const INITIAL_CONFIG: &str = "initial.conf";

/// Which configuration the appliance boots with.
#[derive(Debug, PartialEq)]
pub enum ConfigChoice {
    /// The board's factory configuration.
    Factory,
    /// The initial configuration on the data disk.
    Initial(Box<Config>),
    /// The initial configuration is there but does not parse: the factory configuration
    /// is used so that the appliance stays reachable, and the reason is logged.
    Broken(String),
}

/// Chooses from the initial configuration's text, if the file exists.
pub fn choose_config(initial: Option<&str>) -> ConfigChoice {
    match initial {
        None => ConfigChoice::Factory,
        Some(text) => match crate::proto::config::text::parse(text) {
            Ok(config) => ConfigChoice::Initial(Box::new(config)),
            Err(e) => ConfigChoice::Broken(format!("{INITIAL_CONFIG}: {e}")),
        },
    }
}

/// One step of bringing the network up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetStep {
    /// Set the interface up (IFF_UP).
    Up(String),
    Address(String, InterfaceAddress),
    /// The default route through this gateway.
    DefaultRoute(IpAddr),
    /// An interface named by the configuration that the board does not have.
    Unknown(String),
}

/// The steps that bring the network up: loopback first, then every board interface the
/// configuration gives addresses, then the default route.
pub fn network_plan(board_interfaces: &[&str], config: &Config) -> Vec<NetStep> {
    let mut steps = vec![NetStep::Up("lo".to_string())];
    for (name, interface) in &config.interfaces {
        if !board_interfaces.contains(&name.as_str()) {
            steps.push(NetStep::Unknown(name.clone()));
            continue;
        }
        steps.push(NetStep::Up(name.clone()));
        for a in &interface.addresses {
            steps.push(NetStep::Address(name.clone(), *a));
        }
    }
    if let Some(gw) = config.system.gateway {
        steps.push(NetStep::DefaultRoute(gw));
    }
    steps
}

/// Waits between starts of a gateway that keeps exiting: 1 s, doubling to a minute; a
/// gateway that ran for a minute starts the count again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

/// The first wait, and the wait after a long run.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between starts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    /// How long to wait before the next start, given how long the last run lasted.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= BACKOFF_MAX {
            self.next = BACKOFF_FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }
}

/// The kernel modules to load, from the initramfs's order file (one file name per line,
/// dependencies first, written by the image build). Blank lines and `#` comments are
/// skipped; names with a `/` are refused so that nothing outside the folder is loaded.
pub fn module_order(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('/'))
        .collect()
}

/// The termios speed constant for a line speed (the board file allows these only).
pub fn termios_speed(bits_per_second: u32) -> Option<libc::speed_t> {
    Some(match bits_per_second {
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_requests_and_back() {
        assert_eq!(signal_request(libc::SIGINT), Some(Shutdown::Restart));
        assert_eq!(signal_request(libc::SIGTERM), Some(Shutdown::Restart));
        assert_eq!(signal_request(libc::SIGPWR), Some(Shutdown::PowerOff));
        assert_eq!(signal_request(libc::SIGUSR1), Some(Shutdown::PowerOff));
        assert_eq!(signal_request(libc::SIGCHLD), None);
        assert_eq!(signal_request(libc::SIGHUP), None);
        for kind in [Shutdown::Restart, Shutdown::PowerOff] {
            assert_eq!(signal_request(signal_for(kind)), Some(kind));
        }
    }

    #[test]
    fn only_a_disk_without_an_ext_superblock_is_formatted() {
        let mut head = vec![0u8; PROBE_LEN];
        assert!(needs_format(&head));
        assert!(needs_format(&head[..100]));
        head[EXT_MAGIC_OFFSET] = 0x53;
        head[EXT_MAGIC_OFFSET + 1] = 0xef;
        assert!(!needs_format(&head));
        head[EXT_MAGIC_OFFSET + 1] = 0xee;
        assert!(needs_format(&head));
    }

    #[test]
    fn configuration_choice() {
        assert_eq!(choose_config(None), ConfigChoice::Factory);
        let ConfigChoice::Initial(c) = choose_config(Some("set system host-name a.example\n"))
        else {
            panic!("parses")
        };
        assert_eq!(c.system.host_name, "a.example");
        let ConfigChoice::Broken(why) = choose_config(Some("set nonsense\n")) else {
            panic!("refused")
        };
        assert!(why.starts_with("initial.conf: line 1:"), "{why}");
    }

    #[test]
    fn network_plan_brings_up_loopback_board_interfaces_and_the_route() {
        let config = crate::proto::config::text::parse(
            "set system gateway 10.0.2.2\n\
             set interface eth0 address 10.0.2.15/24\n\
             set interface wlan9 address 192.0.2.1/24\n",
        )
        .unwrap();
        let plan = network_plan(&["eth0"], &config);
        let a = config.interfaces["eth0"].addresses[0];
        assert_eq!(
            plan,
            [
                NetStep::Up("lo".into()),
                NetStep::Up("eth0".into()),
                NetStep::Address("eth0".into(), a),
                NetStep::Unknown("wlan9".into()),
                NetStep::DefaultRoute("10.0.2.2".parse().unwrap()),
            ]
        );
        assert_eq!(
            network_plan(&["eth0"], &Config::default()),
            [NetStep::Up("lo".into())]
        );
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let waits: Vec<u64> = (0..8).map(|_| b.after_exit(short).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.after_exit(BACKOFF_MAX), BACKOFF_FIRST);
    }

    #[test]
    fn module_order_skips_comments_and_paths() {
        assert_eq!(
            module_order("# deps first\nvirtio.ko\n\n ../../etc/x.ko\nvirtio_net.ko\n"),
            ["virtio.ko", "virtio_net.ko"]
        );
    }

    #[test]
    fn every_board_speed_has_a_termios_constant() {
        for speed in drawbridge_image::board::SPEEDS {
            assert!(termios_speed(speed as u32).is_some(), "{speed}");
        }
        assert_eq!(termios_speed(1234), None);
    }
}
