//! The watchdog between the gateway and what supervises it: PID 1 on an appliance,
//! systemd (`Type=notify`, `WatchdogSec=`) on a host. They speak the service manager's
//! notification protocol (`sd_notify(3)`): datagrams of `NAME=VALUE` lines on the socket
//! named by `NOTIFY_SOCKET`. The gateway says `READY=1` once it serves, `STOPPING=1`
//! with `EXTEND_TIMEOUT_USEC` (its stopping grace and time to write out) when it begins
//! to stop, and `WATCHDOG=1` from its event loop every quarter of
//! `WATCHDOG_USEC`; a supervisor that hears nothing for `WATCHDOG_USEC` after the
//! gateway was ready kills it and starts it again. A gateway whose event loop is stuck
//! (a blocking call, a loop that never yields, a wait on a hung disk) stops beating even
//! though its process still runs, which is what a restart on exit cannot see. A start
//! is timed too: a gateway not ready within the timeout (at least [`START_FLOOR`]) is
//! killed, unless it keeps saying `EXTEND_TIMEOUT_USEC` while it recovers a large queue.
//!
//! Pure: the datagram's text both ways, the settings the environment gives, and the
//! supervisor's verdict from the time it is told.

use std::time::{Duration, Instant};

/// One statement of a notification datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: start-up is over and the listeners serve.
    Ready,
    /// `STOPPING=1`: the gateway has begun to stop.
    Stopping,
    /// `WATCHDOG=1`: the event loop still turns.
    Beat,
    /// `EXTEND_TIMEOUT_USEC=N`: what is under way (a stop, with its grace) needs this
    /// long from now; the supervisor waits at least that long before it kills.
    ExtendTimeout(Duration),
    /// `DRAWBRIDGE_STARVE_WATCHDOG=1`, ours (a service manager ignores it): PID 1 is
    /// to stop feeding the hardware watchdog, so that it resets the machine
    /// (`system watchdog-test hardware`).
    StarveHardware,
}

/// The largest datagram read; systemd's own limit for a notification is larger, but the
/// gateway sends a few dozen bytes.
pub const MAX_DATAGRAM: usize = 4096;

impl Notice {
    fn line(self) -> String {
        match self {
            Notice::Ready => "READY=1".into(),
            Notice::Stopping => "STOPPING=1".into(),
            Notice::Beat => "WATCHDOG=1".into(),
            Notice::ExtendTimeout(d) => format!("EXTEND_TIMEOUT_USEC={}", d.as_micros()),
            Notice::StarveHardware => "DRAWBRIDGE_STARVE_WATCHDOG=1".into(),
        }
    }
}

/// The datagram that carries `notices`, one line each.
pub fn encode(notices: &[Notice]) -> String {
    let mut out = String::new();
    for n in notices {
        out.push_str(&n.line());
        out.push('\n');
    }
    out
}

/// The notices a datagram carries, in order. Lines this module does not know
/// (`STATUS=…`, `MAINPID=…`, other values) are skipped, as a supervisor does; so is
/// everything past [`MAX_DATAGRAM`] bytes.
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    let datagram = &datagram[..datagram.len().min(MAX_DATAGRAM)];
    datagram
        .split(|&b| b == b'\n')
        .filter_map(|line| match line {
            b"READY=1" => Some(Notice::Ready),
            b"STOPPING=1" => Some(Notice::Stopping),
            b"WATCHDOG=1" => Some(Notice::Beat),
            b"DRAWBRIDGE_STARVE_WATCHDOG=1" => Some(Notice::StarveHardware),
            _ => {
                let usec = line.strip_prefix(b"EXTEND_TIMEOUT_USEC=")?;
                let usec: u64 = std::str::from_utf8(usec).ok()?.parse().ok()?;
                Some(Notice::ExtendTimeout(Duration::from_micros(usec)))
            }
        })
        .collect()
}

/// The shortest timeout taken from the environment: a supervisor asking for beats more
/// often than every 100 ms would spend the gateway's time on them.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(400);

/// The watchdog timeout the supervisor set for this process, from `WATCHDOG_USEC` and
/// `WATCHDOG_PID` as systemd sets them: none when the timeout is absent, zero or not a
/// number, or when `WATCHDOG_PID` names another process (the variables were inherited).
/// Timeouts under [`MIN_TIMEOUT`] are raised to it.
pub fn timeout_from_env(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec).max(MIN_TIMEOUT))
}

/// How often the gateway beats for a timeout: four times in each, so that one late beat
/// on a busy machine is not taken for a hang.
pub fn beat_every(timeout: Duration) -> Duration {
    timeout / 4
}

/// The least time a start is given before it must be ready: a start also answers to
/// the watchdog timeout when that is longer, and each sign of progress it gives
/// (`EXTEND_TIMEOUT_USEC`, sent while a large queue is recovered) buys it this much more
/// from then. Half a minute is many times a normal start, token login and spool
/// included, on a small board or in an emulator.
pub const START_FLOOR: Duration = Duration::from_secs(30);

/// What the supervisor makes of a gateway at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not ready yet, and within its time to start.
    Starting,
    /// Stopping, within its time to stop.
    Stopping,
    /// Ready, and beating.
    Alive,
    /// Ready once, and silent for this long, at least the timeout: kill it.
    Silent(Duration),
    /// Started this long ago, not ready and not making progress in time: kill it.
    NotReady(Duration),
    /// Began to stop this long ago, and neither ended, nor beat, nor became ready within
    /// the time it asked for: kill it.
    StopOverdue(Duration),
    /// Not timed: already killed.
    Untimed,
}

/// Where one run of the gateway is, for the supervisor.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Not ready yet: ready by this deadline, or killed.
    Starting { deadline: Instant },
    /// Ready, last heard of then.
    Running { last: Instant },
    /// Stopping since `since`: ended, beating or ready again by `deadline`, or killed.
    Stopping { since: Instant, deadline: Instant },
    /// Killed: what follows is its exit.
    Untimed,
}

/// The supervisor's view of one run of the gateway.
#[derive(Clone, Debug)]
pub struct Watch {
    timeout: Duration,
    started: Instant,
    ready_at: Option<Instant>,
    phase: Phase,
}

impl Watch {
    /// A gateway started at `now`, to be ready within the timeout (at least
    /// [`START_FLOOR`], more while it says it makes progress), and killed when silent
    /// for `timeout` once ready.
    pub fn new(timeout: Duration, now: Instant) -> Watch {
        Watch {
            timeout,
            started: now,
            ready_at: None,
            phase: Phase::Starting {
                deadline: now + timeout.max(START_FLOOR),
            },
        }
    }

    /// The gateway said `notice` at `now`. A beat before `READY=1` counts as ready: the
    /// event loop turns. `EXTEND_TIMEOUT_USEC` while it starts or stops moves that
    /// deadline to that long from now, if that is later. `STOPPING=1` gives the stop the
    /// timeout (at least [`START_FLOOR`]), which the gateway extends by its stopping
    /// grace: a stop whose event loop blocks (no beat, no exit) past it is killed. A beat
    /// during a stop (the loop still turns) gives it the timeout from then, and the stop
    /// goes on taking `EXTEND_TIMEOUT_USEC`: the console's `restart` starts the gateway
    /// afresh in the same process, whose recovery of a large queue says it progresses.
    pub fn notice(&mut self, notice: Notice, now: Instant) {
        match notice {
            Notice::Beat if matches!(self.phase, Phase::Stopping { .. }) => {
                if let Phase::Stopping { deadline, .. } = &mut self.phase {
                    *deadline = (*deadline).max(now + self.timeout);
                }
            }
            Notice::Ready | Notice::Beat => {
                self.ready_at.get_or_insert(now);
                self.phase = Phase::Running { last: now };
            }
            Notice::Stopping if !matches!(self.phase, Phase::Untimed) => {
                self.phase = Phase::Stopping {
                    since: now,
                    deadline: now + self.timeout.max(START_FLOOR),
                }
            }
            Notice::Stopping | Notice::StarveHardware => {}
            Notice::ExtendTimeout(more) => match &mut self.phase {
                Phase::Starting { deadline } | Phase::Stopping { deadline, .. } => {
                    *deadline = (*deadline).max(now + more);
                }
                Phase::Running { .. } | Phase::Untimed => {}
            },
        }
    }

    /// The supervisor killed this run: what follows is its exit, not timed.
    pub fn killed(&mut self) {
        self.phase = Phase::Untimed;
    }

    /// When the gateway became ready, if it did.
    pub fn ready_at(&self) -> Option<Instant> {
        self.ready_at
    }

    /// The verdict at `now`.
    pub fn verdict(&self, now: Instant) -> Verdict {
        match self.phase {
            Phase::Starting { deadline } if now >= deadline => {
                Verdict::NotReady(now.saturating_duration_since(self.started))
            }
            Phase::Starting { .. } => Verdict::Starting,
            Phase::Stopping { since, deadline } if now >= deadline => {
                Verdict::StopOverdue(now.saturating_duration_since(since))
            }
            Phase::Stopping { .. } => Verdict::Stopping,
            Phase::Running { last } => {
                let silent = now.saturating_duration_since(last);
                if silent >= self.timeout {
                    Verdict::Silent(silent)
                } else {
                    Verdict::Alive
                }
            }
            Phase::Untimed => Verdict::Untimed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_round_trips_and_unknown_lines_are_skipped() {
        let all = [
            Notice::Ready,
            Notice::Beat,
            Notice::Stopping,
            Notice::StarveHardware,
        ];
        assert_eq!(
            encode(&all),
            "READY=1\nWATCHDOG=1\nSTOPPING=1\nDRAWBRIDGE_STARVE_WATCHDOG=1\n"
        );
        assert_eq!(parse(encode(&all).as_bytes()), all);
        assert_eq!(
            parse(b"STATUS=recovering the queue\nMAINPID=12\nREADY=1\nWATCHDOG=trigger\nREADY=0"),
            [Notice::Ready]
        );
        assert_eq!(parse(b"WATCHDOG=1"), [Notice::Beat]);
        let stop = [
            Notice::Stopping,
            Notice::ExtendTimeout(Duration::from_secs(10)),
        ];
        assert_eq!(encode(&stop), "STOPPING=1\nEXTEND_TIMEOUT_USEC=10000000\n");
        assert_eq!(parse(encode(&stop).as_bytes()), stop);
        assert_eq!(
            parse(b"EXTEND_TIMEOUT_USEC=\nEXTEND_TIMEOUT_USEC=-1\nEXTEND_TIMEOUT_USEC=9x"),
            []
        );
        assert_eq!(parse(b""), []);
        assert_eq!(parse(b"\0\xff\n\n"), []);
    }

    #[test]
    fn a_datagram_is_read_only_up_to_its_limit() {
        let mut long = vec![b'x'; MAX_DATAGRAM - 3];
        long.extend_from_slice(b"\nREADY=1\n");
        assert_eq!(parse(&long), []);
        long.truncate(MAX_DATAGRAM - 10);
        long.extend_from_slice(b"\nREADY=1\n");
        assert_eq!(parse(&long), [Notice::Ready]);
    }

    #[test]
    fn the_timeout_comes_from_the_environment_for_this_process_only() {
        let s = Duration::from_secs;
        assert_eq!(timeout_from_env(Some("30000000"), None, 7), Some(s(30)));
        assert_eq!(
            timeout_from_env(Some("30000000"), Some("7"), 7),
            Some(s(30))
        );
        assert_eq!(timeout_from_env(Some("30000000"), Some("8"), 7), None);
        assert_eq!(timeout_from_env(Some("30000000"), Some("x"), 7), None);
        assert_eq!(timeout_from_env(None, Some("7"), 7), None);
        assert_eq!(timeout_from_env(Some("0"), None, 7), None);
        assert_eq!(timeout_from_env(Some("-5"), None, 7), None);
        assert_eq!(timeout_from_env(Some("soon"), None, 7), None);
        assert_eq!(timeout_from_env(Some("1"), None, 7), Some(MIN_TIMEOUT));
        assert_eq!(beat_every(s(60)), s(15));
    }

    #[test]
    fn a_start_is_given_the_timeout_but_at_least_the_floor() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let w = Watch::new(s(10), t0);
        assert_eq!(w.verdict(t0 + START_FLOOR - s(1)), Verdict::Starting);
        assert_eq!(w.verdict(t0 + START_FLOOR), Verdict::NotReady(START_FLOOR));
        assert_eq!(w.ready_at(), None);
        let w = Watch::new(s(300), t0);
        assert_eq!(w.verdict(t0 + s(299)), Verdict::Starting);
        assert_eq!(w.verdict(t0 + s(301)), Verdict::NotReady(s(301)));
    }

    #[test]
    fn progress_extends_a_start_and_only_a_start() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut w = Watch::new(s(10), t0);
        // Each sign of progress gives that long from when it came, never less than before.
        w.notice(Notice::ExtendTimeout(s(30)), t0 + s(25));
        assert_eq!(w.verdict(t0 + s(54)), Verdict::Starting);
        w.notice(Notice::ExtendTimeout(s(1)), t0 + s(50));
        assert_eq!(w.verdict(t0 + s(54)), Verdict::Starting);
        assert_eq!(w.verdict(t0 + s(55)), Verdict::NotReady(s(55)));
        w.notice(Notice::ExtendTimeout(s(30)), t0 + s(54));
        assert_eq!(w.verdict(t0 + s(83)), Verdict::Starting);
        // Once ready, an extension does not cover silence.
        w.notice(Notice::Ready, t0 + s(60));
        w.notice(Notice::ExtendTimeout(s(3600)), t0 + s(61));
        assert_eq!(w.verdict(t0 + s(70)), Verdict::Silent(s(10)));
    }

    #[test]
    fn a_killed_run_is_not_timed_again() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut w = Watch::new(s(10), t0);
        assert!(matches!(w.verdict(t0 + s(31)), Verdict::NotReady(_)));
        w.killed();
        assert_eq!(w.verdict(t0 + s(3600)), Verdict::Untimed);
        let mut w = Watch::new(s(10), t0);
        w.notice(Notice::Ready, t0);
        assert!(matches!(w.verdict(t0 + s(10)), Verdict::Silent(_)));
        w.killed();
        assert_eq!(w.verdict(t0 + s(3600)), Verdict::Untimed);
    }

    #[test]
    fn a_ready_gateway_that_stops_beating_is_silent_after_the_timeout() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut w = Watch::new(s(10), t0);
        w.notice(Notice::Ready, t0 + s(5));
        assert_eq!(w.ready_at(), Some(t0 + s(5)));
        assert_eq!(w.verdict(t0 + s(14)), Verdict::Alive);
        w.notice(Notice::Beat, t0 + s(12));
        assert_eq!(w.verdict(t0 + s(21)), Verdict::Alive);
        assert_eq!(w.verdict(t0 + s(22)), Verdict::Silent(s(10)));
        assert_eq!(w.verdict(t0 + s(40)), Verdict::Silent(s(28)));
        // Being ready is kept from the first notice.
        w.notice(Notice::Ready, t0 + s(41));
        assert_eq!(w.ready_at(), Some(t0 + s(5)));
        assert_eq!(w.verdict(t0 + s(51)), Verdict::Silent(s(10)));
        // A stop is timed by its own deadline, then silence again once it beats.
        w.notice(Notice::Stopping, t0 + s(45));
        assert_eq!(w.verdict(t0 + s(74)), Verdict::Stopping);
        w.notice(Notice::Ready, t0 + s(74));
        assert_eq!(w.verdict(t0 + s(84)), Verdict::Silent(s(10)));
        assert_eq!(w.ready_at(), Some(t0 + s(5)));
    }

    #[test]
    fn a_stop_is_given_what_it_asks_and_a_blocked_one_is_overdue() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut w = Watch::new(s(10), t0);
        w.notice(Notice::Ready, t0);
        // At least the floor; the gateway asks for its grace and a margin.
        w.notice(Notice::Stopping, t0 + s(100));
        assert_eq!(w.verdict(t0 + s(129)), Verdict::Stopping);
        assert_eq!(w.verdict(t0 + s(130)), Verdict::StopOverdue(s(30)));
        w.notice(Notice::ExtendTimeout(s(600)), t0 + s(100));
        assert_eq!(w.verdict(t0 + s(699)), Verdict::Stopping);
        assert_eq!(w.verdict(t0 + s(700)), Verdict::StopOverdue(s(600)));
        // A loop that still turns has the timeout from its beat.
        w.notice(Notice::Beat, t0 + s(695));
        assert_eq!(w.verdict(t0 + s(704)), Verdict::Stopping);
        assert_eq!(w.verdict(t0 + s(705)), Verdict::StopOverdue(s(605)));
        // A killed run's stop is its exit: not timed.
        w.killed();
        w.notice(Notice::Stopping, t0 + s(661));
        assert_eq!(w.verdict(t0 + s(3600)), Verdict::Untimed);
    }

    #[test]
    fn a_restart_in_the_same_process_is_timed_as_a_start_after_a_beat_of_its_stop() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut w = Watch::new(s(60), t0);
        w.notice(Notice::Ready, t0);
        w.notice(Notice::Stopping, t0 + s(100));
        w.notice(Notice::ExtendTimeout(s(10)), t0 + s(100));
        w.notice(Notice::Beat, t0 + s(105));
        // The new start recovers a large queue, saying so every second, with no beat.
        for t in 110..=200 {
            w.notice(Notice::ExtendTimeout(START_FLOOR), t0 + s(t));
            assert_eq!(w.verdict(t0 + s(t)), Verdict::Stopping, "at {t} s");
        }
        assert_eq!(w.verdict(t0 + s(230)), Verdict::StopOverdue(s(130)));
        w.notice(Notice::Ready, t0 + s(229));
        assert_eq!(w.verdict(t0 + s(288)), Verdict::Alive);
        assert_eq!(w.verdict(t0 + s(289)), Verdict::Silent(s(60)));
    }

    #[test]
    fn a_beat_before_ready_counts_as_ready() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut w = Watch::new(s(10), t0);
        w.notice(Notice::Beat, t0);
        assert_eq!(w.ready_at(), Some(t0));
        assert_eq!(w.verdict(t0 + s(10)), Verdict::Silent(s(10)));
    }
}
