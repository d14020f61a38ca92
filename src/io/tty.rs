//! Terminals: where the console is ([`ConsoleDevice`]), raw mode with termios, a serial
//! device opened at a speed, the window size.
//!
//! Raw mode hands every byte to the console as typed (Ctrl-C included) and sends our
//! CR LF line ends as they are. The terminal's settings before are kept and put back by
//! [`restore`] when the process ends or re-executes itself.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

/// Where the board's console is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleDevice {
    /// Standard input and output (the host board).
    Stdio,
    /// A serial device and its speed in bits per second.
    Serial { path: String, baud: u32 },
}

/// The line speed of a serial console when none is given.
pub const DEFAULT_BAUD: u32 = 115_200;

impl ConsoleDevice {
    /// `stdin`, `DEVICE` or `DEVICE:SPEED`.
    pub fn parse(text: &str) -> Result<ConsoleDevice, String> {
        if text == "stdin" || text == "-" {
            return Ok(ConsoleDevice::Stdio);
        }
        let (path, baud) = match text.rsplit_once(':') {
            Some((p, s)) => {
                let baud: u32 = s
                    .parse()
                    .map_err(|_| format!("'{s}' is not a line speed"))?;
                if speed(baud).is_none() {
                    return Err(format!("{baud} is not a serial line speed"));
                }
                (p, baud)
            }
            None => (text, DEFAULT_BAUD),
        };
        if !path.starts_with('/') {
            return Err(format!("'{path}' is not a device path such as /dev/ttyS0"));
        }
        Ok(ConsoleDevice::Serial {
            path: path.to_string(),
            baud,
        })
    }
}

/// The settings terminals had before raw mode, to put back.
static SAVED: Mutex<Vec<(RawFd, libc::termios)>> = Mutex::new(Vec::new());

pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only looks at the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

fn get(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: a zeroed termios is a valid value to be overwritten by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes into the termios we own.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

fn set(fd: RawFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: tcsetattr reads the termios we pass.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the terminal on `fd` in raw mode (`cfmakeraw`: no echo, no line editing, no
/// signals from Ctrl-C, no output processing), remembering how it was.
pub fn make_raw(fd: RawFd) -> io::Result<()> {
    let before = get(fd)?;
    let mut raw = before;
    // SAFETY: cfmakeraw edits the termios we own.
    unsafe { libc::cfmakeraw(&mut raw) };
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    set(fd, &raw)?;
    let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    if !saved.iter().any(|(f, _)| *f == fd) {
        saved.push((fd, before));
    }
    Ok(())
}

/// Puts every terminal made raw back as it was.
pub fn restore() {
    let saved = std::mem::take(&mut *SAVED.lock().unwrap_or_else(|e| e.into_inner()));
    for (fd, t) in saved {
        let _ = set(fd, &t);
    }
}

/// The termios speed constant of a line speed in bits per second.
pub fn speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115_200 => libc::B115200,
        230_400 => libc::B230400,
        460_800 => libc::B460800,
        921_600 => libc::B921600,
        _ => return None,
    })
}

/// Opens a serial device, raw, at `baud`, 8 bits, no parity, one stop bit, ignoring
/// the modem lines (a console cable rarely carries them).
pub fn open_serial(path: &str, baud: u32) -> io::Result<File> {
    let speed = speed(baud).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{baud} is not a serial line speed"),
        )
    })?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    let fd = file.as_raw_fd();
    make_raw(fd)?;
    let mut t = get(fd)?;
    t.c_cflag |= libc::CLOCAL | libc::CREAD;
    t.c_cflag &= !(libc::CRTSCTS | libc::CSTOPB | libc::PARENB);
    set_speed(&mut t, speed);
    set(fd, &t)?;
    Ok(file)
}

/// What `cfsetispeed` and `cfsetospeed` do on Linux, written out: the libc crate binds
/// those with a symbol version that the static firmware's link cannot resolve.
pub fn set_speed(t: &mut libc::termios, speed: libc::speed_t) {
    t.c_cflag = (t.c_cflag & !libc::CBAUD) | speed;
    t.c_ispeed = speed;
    t.c_ospeed = speed;
}

/// The terminal's rows and columns, when it says.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: a zeroed winsize is valid; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes into the winsize we own.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds() {
        assert_eq!(speed(115_200), Some(libc::B115200));
        assert_eq!(speed(9600), Some(libc::B9600));
        assert_eq!(speed(12345), None);
    }

    #[test]
    fn the_written_out_speed_is_what_libc_reads_back() {
        // SAFETY: termios is plain data.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        t.c_cflag = libc::CS8 | libc::B38400;
        set_speed(&mut t, libc::B115200);
        // SAFETY: reading the termios we own (the dynamic test build links these).
        let (i, o) = unsafe { (libc::cfgetispeed(&t), libc::cfgetospeed(&t)) };
        assert_eq!((i, o), (libc::B115200, libc::B115200));
        assert_eq!(t.c_cflag & libc::CSIZE, libc::CS8);
    }

    #[test]
    fn raw_mode_on_a_pseudo_terminal_and_back() {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors we then own; no name, termios or size.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0);
        assert!(is_terminal(slave));
        assert_ne!(get(slave).unwrap().c_lflag & libc::ECHO, 0);
        make_raw(slave).unwrap();
        assert_eq!(
            get(slave).unwrap().c_lflag & (libc::ECHO | libc::ICANON | libc::ISIG),
            0
        );
        restore();
        assert_ne!(get(slave).unwrap().c_lflag & libc::ECHO, 0);
        // SAFETY: closing the descriptors openpty gave us.
        unsafe {
            libc::close(master);
            libc::close(slave);
        }
    }
}
