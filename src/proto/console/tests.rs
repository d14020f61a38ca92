//! Transcript tests of the console core: a person's keystrokes in, the screen a dumb
//! terminal would show out, against a stand-in gateway that answers at once. Each
//! transcript is also fed byte by byte and split at every index, and must write the
//! same bytes.

use std::time::{Duration, Instant};

use super::*;
use crate::proto::config::host_default;

/// A gateway stand-in: one console login, a running configuration, commits.
struct Fake {
    password: String,
    must_change: bool,
    running: Config,
    sequence: u64,
    requests: Vec<Request>,
    /// The class the login gets.
    class: LoginClass,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            password: FACTORY_PASSWORD.into(),
            must_change: true,
            running: host_default(),
            sequence: 1,
            requests: Vec::new(),
            class: LoginClass::SuperUser,
        }
    }

    fn changed() -> Fake {
        Fake {
            password: "s3cret-pass".into(),
            must_change: false,
            ..Fake::new()
        }
    }

    fn answer(&mut self, request: Request) -> Answer {
        self.requests.push(request.clone());
        match request {
            Request::Login { user, password } => {
                if user == FACTORY_USER && password.expose() == self.password {
                    Answer::LoggedIn {
                        must_change: self.must_change,
                        class: self.class,
                    }
                } else {
                    Answer::Refused {
                        delay: Duration::from_secs(2),
                    }
                }
            }
            Request::SetLoginPassword { password, .. } => {
                self.password = password.expose().to_string();
                self.must_change = false;
                Answer::LoggedIn {
                    must_change: false,
                    class: self.class,
                }
            }
            Request::Run(Command::ShowStatus) => Answer::Text("Version: test\nUptime: 1s\n".into()),
            Request::Run(Command::ShowLog) => {
                Answer::Text((1..=30).map(|i| format!("log line {i}\n")).collect())
            }
            Request::Run(Command::TestSmtp { .. }) => Answer::Error("connect: refused".into()),
            Request::Run(Command::Restart) => Answer::Closing("Restarting.".into()),
            Request::Run(c) => Answer::Text(format!("ran {c:?}\n")),
            Request::Configure | Request::Rollback(_) => Answer::Candidate(Box::new(Candidate {
                base: self.sequence,
                config: self.running.clone(),
            })),
            Request::Running => Answer::Running(Box::new(self.running.clone())),
            Request::Check(_) => Answer::Text("configuration check succeeds\n".into()),
            Request::Commit { candidate, .. } => {
                self.running = candidate.config.clone();
                self.sequence += 1;
                Answer::Committed {
                    text: format!("commit {}: applied", self.sequence),
                    candidate: Box::new(Candidate {
                        base: self.sequence,
                        config: self.running.clone(),
                    }),
                }
            }
            Request::ReadFile(f) if f == "/tmp/extra.conf" => {
                Answer::File("set route partner.example mx\n".into())
            }
            Request::ReadFile(f) => Answer::Error(format!("cannot read {f}")),
            Request::Names(NameKind::QueueId) => Answer::Names(
                NameKind::QueueId,
                vec!["4FB7A02C9E11".into(), "9AC3D05E7B22".into()],
            ),
            Request::Names(NameKind::MailUser) => {
                Answer::Names(NameKind::MailUser, vec!["alice".into(), "bob".into()])
            }
            Request::Names(_) => Answer::Error("no names here".into()),
        }
    }
}

/// One step of a transcript.
#[derive(Clone)]
enum Step<'a> {
    Keys(&'a [u8]),
    Log(&'a str),
    /// Time passes.
    Wait(Duration),
}

/// Runs a transcript, feeding each `Keys` step in the pieces `split` makes of it.
/// `console` was made at `start`, where the transcript's time begins.
fn run_split(
    console: &mut Console,
    start: Instant,
    fake: &mut Fake,
    steps: &[Step<'_>],
    split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>,
) -> Vec<u8> {
    let mut now = start;
    let mut out = Vec::new();
    let pump = |console: &mut Console, fake: &mut Fake, out: &mut Vec<u8>, now: Instant| loop {
        if let Some(bytes) = console.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        match console.poll_event() {
            Some(Event::Request(r)) => {
                let answer = fake.answer(r);
                console.handle_answer(answer, now);
            }
            Some(Event::Cancel | Event::Closed) => {}
            None => break,
        }
    };
    pump(console, fake, &mut out, now);
    for step in steps {
        match step {
            Step::Keys(bytes) => {
                for piece in split(bytes) {
                    console.handle_input(&piece, now);
                    pump(console, fake, &mut out, now);
                }
            }
            Step::Log(line) => {
                console.handle_log(line);
                pump(console, fake, &mut out, now);
            }
            Step::Wait(d) => {
                now += *d;
                console.handle_timeout(now);
                pump(console, fake, &mut out, now);
            }
        }
    }
    if let Some(bytes) = console.poll_transmit() {
        out.extend_from_slice(&bytes);
    }
    out
}

fn whole(b: &[u8]) -> Vec<Vec<u8>> {
    vec![b.to_vec()]
}

/// Runs a transcript whole, byte by byte, and split at every index of every step,
/// checks that all give the same bytes, and returns the screen.
fn transcript(fake: impl Fn() -> Fake, options: Options, steps: &[Step<'_>]) -> Screenful {
    let start = Instant::now();
    let expected = run_split(
        &mut Console::new(options.clone(), start),
        start,
        &mut fake(),
        steps,
        &whole,
    );
    let bytewise = run_split(
        &mut Console::new(options.clone(), start),
        start,
        &mut fake(),
        steps,
        &|b| b.iter().map(|x| vec![*x]).collect(),
    );
    assert_eq!(
        String::from_utf8_lossy(&bytewise),
        String::from_utf8_lossy(&expected)
    );
    for (k, step) in steps.iter().enumerate() {
        let Step::Keys(bytes) = step else { continue };
        for cut in 1..bytes.len() {
            let split = |b: &[u8]| {
                if b.as_ptr() == bytes.as_ptr() {
                    vec![b[..cut].to_vec(), b[cut..].to_vec()]
                } else {
                    vec![b.to_vec()]
                }
            };
            let got = run_split(
                &mut Console::new(options.clone(), start),
                start,
                &mut fake(),
                steps,
                &split,
            );
            assert_eq!(got, expected, "step {k} cut at {cut}");
        }
    }
    let mut screen = Screenful::default();
    screen.feed(&expected);
    screen
}

/// What the terminal shows, checked to have had nothing but what a dumb terminal takes.
#[derive(Default)]
struct Screenful(screen::Screen);

impl Screenful {
    fn feed(&mut self, bytes: &[u8]) {
        self.0.feed(bytes);
        assert_eq!(
            self.0.stray(),
            0,
            "a control character was sent to the terminal"
        );
    }

    fn lines(&self) -> Vec<String> {
        self.0.lines()
    }

    fn text(&self) -> String {
        self.0.text()
    }

    fn last(&self) -> String {
        self.0.current()
    }
}

fn opts() -> Options {
    Options {
        host_name: "gw.example.com".into(),
        ..Options::default()
    }
}

fn logged_in() -> Options {
    Options {
        user: Some("admin".into()),
        ..opts()
    }
}

#[test]
fn first_login_forces_a_new_password() {
    let screen = transcript(
        Fake::new,
        opts(),
        &[
            Step::Keys(b"admin\rdrawbridge\r"),
            // Too short, then the factory one again, then two that differ, then good.
            Step::Keys(b"short\rdrawbridge\rlong-enough-1\rlong-enough-2\r"),
            Step::Keys(b"long-enough-1\rlong-enough-1\rshow status\r"),
        ],
    );
    let text = screen.text();
    assert!(
        text.contains("login: admin\nPassword:\nThe factory password must be changed"),
        "{text}"
    );
    assert!(text.contains("The password must have at least 8 characters."));
    assert!(text.contains("The new password must not be the factory password."));
    assert!(text.contains("The passwords do not match."));
    assert!(text.contains("Password changed.\n--- drawbridge"));
    assert!(text.contains(
        "admin@gw.example.com> show status\nVersion: test\nUptime: 1s\nadmin@gw.example.com>"
    ));
    // No password ever reaches the screen.
    assert!(!text.contains("drawbridge\n") || !text.contains("Password:drawbridge"));
    assert!(!text.contains("long-enough"));
}

#[test]
fn a_login_class_limits_what_the_login_may_do() {
    let steps = [
        Step::Keys(b"admin\rs3cret-pass\r"),
        Step::Keys(
            b"show queue\rexplain from-ip 192.0.2.1 mail a@example.com rcpt b@example.com\r",
        ),
        Step::Keys(b"queue hold all\rtest smtp 192.0.2.1\r"),
        Step::Keys(b"configure\rpassword add bob\rrestart\rlogin password\r"),
    ];
    let read_only = || Fake {
        class: LoginClass::ReadOnly,
        ..Fake::changed()
    };
    let text = transcript(read_only, opts(), &steps).text();
    assert!(text.contains("> show queue\nran ShowQueue"), "{text}");
    assert!(text.contains("ran Explain"), "{text}");
    for refused in [
        "queue hold all",
        "test smtp 192.0.2.1",
        "configure",
        "password add bob",
        "restart",
    ] {
        let needed = if refused.starts_with("queue") || refused.starts_with("test") {
            "operator"
        } else {
            "super-user"
        };
        assert!(
            text.contains(&format!(
                "> {refused}\nerror: permission denied: this needs the {needed} class; admin is read-only\n"
            )),
            "{refused}: {text}"
        );
    }
    // One's own password, whatever the class.
    assert!(text.contains("> login password\nNew password:"), "{text}");
    let operator = || Fake {
        class: LoginClass::Operator,
        ..Fake::changed()
    };
    let text = transcript(operator, opts(), &steps).text();
    assert!(text.contains("ran QueueHold(All)"), "{text}");
    assert!(text.contains("> configure\nerror: permission denied: this needs the super-user class; admin is operator"), "{text}");
    assert!(!text.contains("Restart"), "{text}");
    let mut fake = Fake::changed();
    let start = Instant::now();
    run_split(
        &mut Console::new(opts(), start),
        start,
        &mut fake,
        &steps,
        &whole,
    );
    assert!(fake.requests.contains(&Request::Configure));
}

#[test]
fn a_wrong_password_waits_then_asks_again() {
    let screen = transcript(
        Fake::changed,
        opts(),
        &[
            Step::Keys(b"admin\rguess\r"),
            // Typed during the wait: dropped, not replayed.
            Step::Keys(b"admin\r"),
            Step::Wait(Duration::from_secs(1)),
            Step::Wait(Duration::from_secs(1)),
            Step::Keys(b"admin\rs3cret-pass\r"),
        ],
    );
    let lines = screen.lines();
    let text = screen.text();
    assert!(
        text.contains("Password:\nLogin incorrect\nlogin: admin\nPassword:\n--- drawbridge"),
        "{text}"
    );
    assert_eq!(screen.last(), "admin@gw.example.com>");
    assert_eq!(lines.iter().filter(|l| l.starts_with("login:")).count(), 2);
}

#[test]
fn help_anywhere_and_the_line_comes_back() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[Step::Keys(b"show sta?tus\x01\x05\r")],
    );
    let text = screen.text();
    assert!(
        text.contains("admin@gw.example.com> show sta\nPossible completions:\n  stats               Counters since the start and since clear stats\n  status              Version, uptime"),
        "{text}"
    );
    assert!(
        text.contains("admin@gw.example.com> show status\nVersion: test"),
        "{text}"
    );
    // `?` in the middle of a line lists what may come at the cursor.
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[Step::Keys(b"show queue\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D?")],
    );
    let text = screen.text();
    assert!(
        text.contains("Possible completions:\n  certificates"),
        "{text}"
    );
    assert_eq!(screen.last(), "admin@gw.example.com> show queue");
    assert_eq!(screen.0.column(), "admin@gw.example.com> show ".len());
}

#[test]
fn a_mistyped_command_is_pointed_at() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[Step::Keys(b"show statsu\rshw status\r")],
    );
    let text = screen.text();
    assert!(
        text.contains("admin@gw.example.com> show statsu\n                           ^\nsyntax error, expecting one of: certificates, configuration, connections, log, queue, stats, status, system, token, users."),
        "{text}"
    );
    assert!(
        text.contains(
            "admin@gw.example.com> shw status\n                      ^\nunknown command."
        ),
        "{text}"
    );
}

#[test]
fn abbreviations_and_ambiguous_ones() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[Step::Keys(b"sh conf\rsh sta\r")],
    );
    let text = screen.text();
    assert!(
        text.contains("admin@gw.example.com> sh conf\nran ShowConfiguration"),
        "{text}"
    );
    assert!(
        text.contains(
            "                         ^\n'sta' is ambiguous.\nPossible completions:\n  stats"
        ),
        "{text}"
    );
}

#[test]
fn tab_completes_keywords_and_configured_names() {
    let screen = transcript(Fake::changed, logged_in(), &[Step::Keys(b"sh\tsta\t")]);
    // `sh` is unique; `sta` could be stats or status: completed to `stat`, then listed.
    assert_eq!(screen.last(), "admin@gw.example.com> show stat");
    let screen = transcript(Fake::changed, logged_in(), &[Step::Keys(b"sh\tstat\t")]);
    assert!(screen.text().contains("Possible completions:\n  stats"));
    assert_eq!(screen.last(), "admin@gw.example.com> show stat");
    // In configuration mode the route patterns configured are completed.
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[Step::Keys(b"configure\rset rou\t.ex\tfailover-t\t3s\r")],
    );
    let text = screen.text();
    assert!(
        text.contains("admin@gw.example.com# set route .example.com failover-timeout 3s\n"),
        "{text}"
    );
}

#[test]
fn a_value_that_names_a_setting_is_shown_completed_and_deleted_in_quotes() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[
            Step::Keys(b"configure\rset service inbound ehlo-keywords AUTH\r"),
            Step::Keys(b"set service inbound channel auth\rshow service inbound\r"),
            Step::Keys(b"delete service inbound ehlo-keywords \"AUTH\"\r"),
            Step::Keys(b"delete service inbound channel a\t\r"),
            Step::Keys(b"show service inbound\r"),
        ],
    );
    let text = screen.text();
    assert!(
        text.contains("# show service inbound\nset service inbound listen 127.0.0.1:2525\nset service inbound channel \"auth\"\nset service inbound ehlo-keywords \"AUTH\"\n"),
        "{text}"
    );
    assert!(
        text.contains("# delete service inbound channel \"auth\"\n"),
        "{text}"
    );
    assert!(
        text.contains("# show service inbound\nset service inbound listen 127.0.0.1:2525\nadmin@gw.example.com#"),
        "{text}"
    );
    assert!(!text.contains("error"), "{text}");
}

#[test]
fn configure_set_compare_commit_and_exit() {
    let fake = Fake::changed;
    let screen = transcript(
        fake,
        logged_in(),
        &[
            Step::Keys(b"configure\r"),
            Step::Keys(b"set route .example.com relay [127.0.0.1]:2599\r"),
            Step::Keys(b"set rout example.org mx\r"),
            Step::Keys(b"set route bogus..name mx\r"),
            Step::Keys(b"show route | compare\r"),
            Step::Keys(b"exit\rno\r"),
            Step::Keys(b"commit comment \"new relay\"\r"),
            Step::Keys(b"show | compare\rexit\r"),
        ],
    );
    let text = screen.text();
    assert!(
        text.contains("Entering configuration mode\n\n[edit]\nadmin@gw.example.com# "),
        "{text}"
    );
    assert!(
        text.contains("# show route | compare\n- set route .example.com relay [127.0.0.1]:2526\n+ set route example.org mx\n+ set route .example.com relay [127.0.0.1]:2599\n"),
        "{text}"
    );
    assert!(text.contains("# set route bogus..name mx\n                                ^\n'bogus..name' is not a domain"), "{text}");
    assert!(text.contains("The configuration has been changed but not committed.\nExit with uncommitted changes?\n[yes,no] (no) no\nadmin@gw.example.com#"), "{text}");
    assert!(text.contains("commit 2: applied"), "{text}");
    assert!(text.contains("# show | compare\nadmin@gw.example.com# exit\nExiting configuration mode\nadmin@gw.example.com>"), "{text}");
}

#[test]
fn queue_ids_and_user_names_are_completed_from_the_gateway() {
    let steps = [
        Step::Keys(b"queue hold ?"),
        Step::Keys(b"\x15queue delete 9\t\r"),
        Step::Keys(b"queue release \t"),
        Step::Keys(b"\x15password set a\t?"),
        Step::Keys(b"\x15login delete ?"),
    ];
    let text = transcript(Fake::changed, logged_in(), &steps).text();
    assert!(
        text.contains("> queue hold\nPossible completions:\n  all"),
        "{text}"
    );
    assert!(text.contains("  4FB7A02C9E11"), "{text}");
    assert!(text.contains("  9AC3D05E7B22"), "{text}");
    assert!(text.contains("  <ID>"), "{text}");
    // The line stays as it was while the names come, and TAB completes from them.
    assert!(
        text.contains("> queue delete 9AC3D05E7B22\nran QueueDelete"),
        "{text}"
    );
    assert!(
        text.contains("> password set alice\nPossible completions:"),
        "{text}"
    );
    // Several: listed.
    assert!(
        text.contains("> queue release\nPossible completions:"),
        "{text}"
    );
    // A kind the gateway could not give: the placeholder alone.
    assert!(
        text.contains("> login delete\nPossible completions:\n  <USER>"),
        "{text}"
    );
    let start = Instant::now();
    let mut fake = Fake::changed();
    run_split(
        &mut Console::new(logged_in(), start),
        start,
        &mut fake,
        &steps,
        &whole,
    );
    let asked: Vec<&Request> = fake
        .requests
        .iter()
        .filter(|r| matches!(r, Request::Names(_)))
        .collect();
    // Asked once per line and kind, again after a command ran (it may have changed them).
    assert_eq!(
        asked,
        [
            &Request::Names(NameKind::QueueId),
            &Request::Names(NameKind::QueueId),
            &Request::Names(NameKind::MailUser),
            &Request::Names(NameKind::ConsoleLogin),
        ],
        "{text}"
    );
    assert!(fake.requests.contains(&Request::Run(Command::QueueDelete(
        Target::parse("9AC3D05E7B22").unwrap()
    ))));
}

#[test]
fn edit_up_top_and_exit_move_through_the_configuration() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[
            Step::Keys(b"configure\r"),
            Step::Keys(b"edit service inbound\r"),
            Step::Keys(b"set listen 127.0.0.1:2599\r"),
            Step::Keys(b"set max-conn\t 40\r"),
            Step::Keys(b"show\r"),
            Step::Keys(b"set nonsense 1\r"),
            Step::Keys(b"exit\r"),
            Step::Keys(b"edit system\redit watchdog\rset timeout 2m\r"),
            Step::Keys(b"exit\r"),
            Step::Keys(b"edit watchdog\rup\rup\r"),
            Step::Keys(b"edit system watchdog\rup 18446744073709551615\r"),
            Step::Keys(b"edit route example.org\rset mx\rshow\r"),
            Step::Keys(b"commit\r"),
            Step::Keys(b"top\rshow system watchdog\rexit\r"),
        ],
    );
    let text = screen.text();
    let p = "admin@gw.example.com# ";
    assert!(
        text.contains(&format!(
            "{p}edit service inbound\n[edit service inbound]\n{p}"
        )),
        "{text}"
    );
    // set, TAB completion and show start at the level.
    assert!(
        text.contains(&format!("{p}set max-connections 40\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{p}show\nset service inbound listen 127.0.0.1:2525\nset service inbound listen 127.0.0.1:2599\nset service inbound max-connections 40\n{p}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{p}set nonsense 1\n{}^\nunknown keyword 'nonsense' after 'set service inbound'",
            " ".repeat(p.len() + 4)
        )),
        "{text}"
    );
    // exit goes back to where the last edit was typed; at the top it would leave.
    assert!(text.contains(&format!("{p}exit\n[edit]\n{p}edit system\n[edit system]\n{p}edit watchdog\n[edit system watchdog]\n{p}set timeout 2m\n{p}exit\n[edit system]\n")), "{text}");
    // up: one place at a time.
    assert!(
        text.contains(&format!(
            "{p}edit watchdog\n[edit system watchdog]\n{p}up\n[edit system]\n{p}up\n[edit]\n"
        )),
        "{text}"
    );
    // However many places up, no further than the top, at once.
    assert!(
        text.contains(&format!(
            "[edit system watchdog]\n{p}up 18446744073709551615\n[edit]\n"
        )),
        "{text}"
    );
    // A list's entry is a place with its key; a commit keeps the level.
    assert!(
        text.contains(&format!(
            "[edit route example.org]\n{p}set mx\n{p}show\nset route example.org mx\n{p}commit\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("commit 2: applied\n{p}top\n[edit]\n{p}show system watchdog\nset system watchdog timeout 2m\n{p}exit\nExiting configuration mode\n")), "{text}");
    assert!(!text.contains("uncommitted"), "{text}");
}

#[test]
fn commit_options_reach_the_gateway() {
    let start = Instant::now();
    let mut console = Console::new(logged_in(), start);
    let mut fake = Fake::changed();
    run_split(&mut console, start, &mut fake, &[Step::Keys(b"conf\rdelete route * \rcommit confirmed 1\rcommit check\rrollback 1\rload merge /tmp/extra.conf\rshow route partner.example\r")], &whole);
    let commits: Vec<&Request> = fake
        .requests
        .iter()
        .filter(|r| matches!(r, Request::Commit { .. }))
        .collect();
    assert!(matches!(
        commits[0],
        Request::Commit {
            confirm_minutes: Some(1),
            ..
        }
    ));
    assert!(fake.requests.iter().any(|r| matches!(r, Request::Check(_))));
    assert!(fake.requests.contains(&Request::Rollback(1)));
    let out = console.poll_transmit().unwrap_or_default();
    let _ = out;
}

#[test]
fn load_merge_from_a_file_and_from_the_terminal() {
    let screen = transcript(Fake::changed, logged_in(), &[
        Step::Keys(b"configure\rload merge /tmp/extra.conf\rshow route partner.example\r"),
        Step::Keys(b"load merge terminal\rset route pasted.example mx\rset route x\x7fy.example mx\r\x04"),
        Step::Log("a log line while pasting"),
        Step::Keys(b"show route y.example\rload merge /nowhere\r"),
    ]);
    let text = screen.text();
    assert!(text.contains("load complete\nadmin@gw.example.com# show route partner.example\nset route partner.example mx\n"), "{text}");
    assert!(text.contains("[Type ^D at a new line to end input]\nset route pasted.example mx\nset route y.example mx\n"), "{text}");
    assert!(
        text.contains("set route y.example mx\n\nload complete\n"),
        "{text}"
    );
    assert!(text.contains("error: cannot read /nowhere"), "{text}");
}

#[test]
fn a_paste_of_nothing_but_newlines_is_bounded_too() {
    let start = Instant::now();
    let mut console = Console::new(logged_in(), start);
    let mut enters = vec![b'\r'; MAX_PASTE + 10];
    enters.push(0x04);
    let out = run_split(
        &mut console,
        start,
        &mut Fake::changed(),
        &[
            Step::Keys(b"configure\rload merge terminal\r"),
            Step::Keys(&enters),
        ],
        &whole,
    );
    // The newlines past the bound ring the bell instead of growing the paste.
    let bells = out.iter().filter(|&&b| b == 0x07).count();
    assert_eq!(bells, 10);
    assert!(String::from_utf8_lossy(&out).ends_with("load complete\r\nadmin@gw.example.com# "));
}

#[test]
fn a_log_line_lands_above_the_line_being_typed() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[
            Step::Keys(b"show sta\x02\x02"),
            Step::Log("Nov 21 21:41:41 gw drawbridge/smtpd[1]: connect from unknown[192.0.2.1]"),
            Step::Keys(b"\x05tus\r"),
        ],
    );
    let lines = screen.lines();
    let at = lines
        .iter()
        .position(|l| l.contains("connect from unknown"))
        .unwrap();
    assert_eq!(
        lines[at],
        "Nov 21 21:41:41 gw drawbridge/smtpd[1]: connect from unknown[192.0.2.1]"
    );
    assert_eq!(lines[at + 1], "admin@gw.example.com> show status");
    assert_eq!(lines[at + 2], "Version: test");
    // A log line while the pager waits goes above --More--.
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[
            Step::Keys(b"show log\r"),
            Step::Log("late line"),
            Step::Keys(b" "),
        ],
    );
    let text = screen.text();
    assert!(
        text.contains("log line 23\nlate line\nlog line 24\n"),
        "{text}"
    );
}

#[test]
fn the_pager_pages_and_stops() {
    let screen = transcript(Fake::changed, logged_in(), &[Step::Keys(b"show log\r\rq")]);
    let text = screen.text();
    assert!(text.contains("log line 24\n"), "{text}");
    assert!(!text.contains("log line 25"));
    assert_eq!(screen.last(), "admin@gw.example.com>");
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[Step::Keys(
            b"show log | no-more\rshow log | match 2 | count\rshow log | last 2\r",
        )],
    );
    let text = screen.text();
    assert!(
        text.contains(
            "log line 30\nadmin@gw.example.com> show log | match 2 | count\nCount: 12 lines\n"
        ),
        "{text}"
    );
    assert!(text.contains("| last 2\nlog line 29\nlog line 30\n"));
    // The pattern is a regular expression; a bad one is refused before anything runs.
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[Step::Keys(
            b"show log | match \"LINE (3|17)$\" | no-more\rshow log | except (x\r",
        )],
    );
    let text = screen.text();
    assert!(
        text.contains("| no-more\nlog line 3\nlog line 17\nadmin@gw.example.com> "),
        "{text}"
    );
    assert!(text.contains("show log | except (x\n"), "{text}");
    assert!(text.contains("'(x' is not a valid pattern"), "{text}");
}

#[test]
fn editing_keys_and_history() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[
            // Ctrl-U, then type, Ctrl-W, arrows and Delete in the middle.
            Step::Keys(b"garbage\x15show stattus\x1b[D\x1b[D\x1b[D\x1b[3~\r"),
            Step::Keys(b"show log | count\r"),
            // Up twice, down once: the second line again.
            Step::Keys(b"\x1b[A\x1b[A\x1b[B\r"),
            Step::Keys(b"show one two\x17\x17stats\x01\x06\x06\x06\x08\x04\x05\r"),
        ],
    );
    let text = screen.text();
    assert!(
        text.contains("admin@gw.example.com> show status\nVersion: test"),
        "{text}"
    );
    assert_eq!(text.matches("Count: 30 lines").count(), 2, "{text}");
    assert!(
        text.contains("admin@gw.example.com> sh stats\nran ShowStats"),
        "{text}"
    );
}

#[test]
fn secrets_are_asked_without_echo() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[
            Step::Keys(b"password add alice\rpassword1\rpassword1\r"),
            Step::Keys(b"factory-reset\rno\rfactory-reset\ryes\r"),
        ],
    );
    let text = screen.text();
    assert!(!text.contains("password1"), "{text}");
    assert!(text.contains("New password:\nRetype new password:\nran PasswordAdd { user: \"alice\", cram_md5: false, password: Secret(…) }"), "{text}");
    assert_eq!(text.matches("ran FactoryReset").count(), 1, "{text}");
}

#[test]
fn exit_and_ctrl_d_end_the_session() {
    let mut console = Console::new(logged_in(), Instant::now());
    console.handle_input(b"exit\r", Instant::now());
    assert_eq!(console.poll_event(), Some(Event::Closed));
    assert!(console.is_closed());
    let mut console = Console::new(logged_in(), Instant::now());
    console.handle_input(b"x\x08\x04", Instant::now());
    assert_eq!(console.poll_event(), Some(Event::Closed));
}

#[test]
fn restart_says_so_and_ends_the_session() {
    let start = Instant::now();
    let mut console = Console::new(logged_in(), start);
    let mut fake = Fake::changed();
    let out = run_split(
        &mut console,
        start,
        &mut fake,
        &[Step::Keys(
            b"restart
yes
show status
",
        )],
        &whole,
    );
    let mut screen = Screenful::default();
    screen.feed(&out);
    assert!(
        screen.text().ends_with("[yes,no] (no) yes\nRestarting.\n"),
        "{}",
        screen.text()
    );
    assert!(console.is_closed());
    assert!(!fake.requests.contains(&Request::Run(Command::ShowStatus)));
}

#[test]
fn ctrl_c_cancels_a_running_request() {
    let mut console = Console::new(logged_in(), Instant::now());
    console.handle_input(b"test smtp 192.0.2.1\rshow", Instant::now());
    assert!(matches!(
        console.poll_event(),
        Some(Event::Request(Request::Run(Command::TestSmtp { .. })))
    ));
    console.handle_input(b"\x03\x03", Instant::now());
    assert_eq!(console.poll_event(), Some(Event::Cancel));
    assert_eq!(console.poll_event(), None);
    console.handle_answer(Answer::Cancelled, Instant::now());
    let mut screen = Screenful::default();
    screen.feed(&console.poll_transmit().unwrap());
    assert!(screen.text().contains("error: cancelled"));
    // What was typed meanwhile is on the new line.
    assert_eq!(screen.last(), "admin@gw.example.com> show");
}

/// Random keys, lines and log lines never panic, never send a control character other
/// than CR, LF, BS and BEL, and keep every buffer bounded.
#[test]
fn fuzzed_keystrokes_never_break_the_console() {
    let pieces: &[&[u8]] = &[
        b"show ",
        b"sta",
        b"tus",
        b"\r",
        b"?",
        b"\t",
        b"\x1b[A",
        b"\x1b[B",
        b"\x1b[C",
        b"\x1b[D",
        b"\x01",
        b"\x05",
        b"\x15",
        b"\x17",
        b"\x03",
        b"\x04",
        b"\x7f",
        b"configure\r",
        b"set ",
        b"route ",
        b"delete ",
        b"| ",
        b"match ",
        b"\"",
        b"exit\r",
        b"commit\r",
        b"load merge terminal\r",
        b"q",
        b" ",
        b"\x1b",
        b"\xc3",
        b"\xa9",
        b"\x00",
        b"\n",
        b"yes\r",
        b"log\r",
        b"rollback 1\r",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200 {
        let now = Instant::now();
        let mut console = Console::new(logged_in(), now);
        let mut fake = Fake::changed();
        let mut screen = Screenful::default();
        for _ in 0..200 {
            let r = next();
            if r % 17 == 0 {
                console.handle_log("log \x1b[31m line");
            } else if r % 5 == 0 {
                let bytes: Vec<u8> = (0..r % 7).map(|_| next() as u8).collect();
                console.handle_input(&bytes, now);
            } else {
                console.handle_input(pieces[(r >> 8) as usize % pieces.len()], now);
            }
            while let Some(event) = console.poll_event() {
                if let Event::Request(req) = event {
                    let answer = fake.answer(req);
                    console.handle_answer(answer, now);
                }
            }
            if let Some(out) = console.poll_transmit() {
                screen.feed(&out);
            }
            assert!(console.typeahead.len() <= MAX_TYPEAHEAD);
            assert!(console.line.chars().len() <= editor::MAX_LINE_CHARS);
            if console.is_closed() {
                break;
            }
        }
    }
}

/// The idle timeout of the tests below.
const IDLE: Duration = Duration::from_secs(10 * 60);
const MINUTE: Duration = Duration::from_secs(60);

fn idle_after(options: Options) -> Options {
    Options {
        idle_timeout: Some(IDLE),
        ..options
    }
}

#[test]
fn a_session_nobody_types_at_is_logged_out() {
    let screen = transcript(
        Fake::changed,
        idle_after(logged_in()),
        &[
            Step::Wait(9 * MINUTE),
            // A keystroke starts the wait again.
            Step::Keys(b"show"),
            Step::Wait(9 * MINUTE),
            Step::Log("a log line is not a keystroke"),
            Step::Wait(MINUTE),
        ],
    );
    let text = screen.text();
    assert!(
        text.ends_with("a log line is not a keystroke\nIdle for 10m: logged out.\n"),
        "{text}"
    );
    let start = Instant::now();
    let mut console = Console::new(idle_after(logged_in()), start);
    assert_eq!(console.poll_timeout(), Some(start + IDLE));
    console.handle_timeout(start + IDLE - Duration::from_secs(1));
    assert!(!console.is_closed());
    console.handle_timeout(start + IDLE);
    assert!(console.is_closed() && console.logged_out() == Some(&Logout::Idle));
    assert_eq!(console.poll_event(), Some(Event::Closed));
    assert_eq!(console.poll_timeout(), None);
}

#[test]
fn an_idle_logout_drops_the_uncommitted_candidate() {
    let screen = transcript(
        Fake::changed,
        idle_after(logged_in()),
        &[
            Step::Keys(b"configure\rset route example.org mx\r"),
            Step::Wait(IDLE),
        ],
    );
    assert!(
        screen
            .text()
            .ends_with("Idle for 10m: logged out.\nThe uncommitted changes were dropped.\n"),
        "{}",
        screen.text()
    );
}

#[test]
fn a_running_request_is_not_idle_and_its_answer_starts_the_wait() {
    let start = Instant::now();
    let mut console = Console::new(idle_after(logged_in()), start);
    console.handle_input(b"test smtp 192.0.2.1\r", start);
    assert!(matches!(console.poll_event(), Some(Event::Request(_))));
    assert_eq!(console.poll_timeout(), None);
    console.handle_timeout(start + 2 * IDLE);
    assert!(!console.is_closed());
    let answered = start + 3 * IDLE;
    console.handle_answer(Answer::Text("250 ok".into()), answered);
    assert_eq!(console.poll_timeout(), Some(answered + IDLE));
    console.handle_timeout(answered + IDLE);
    assert_eq!(console.logged_out(), Some(&Logout::Idle));
}

#[test]
fn the_login_prompt_and_a_session_without_a_timeout_never_idle_out() {
    let start = Instant::now();
    let mut at_login = Console::new(idle_after(opts()), start);
    assert_eq!(at_login.poll_timeout(), None);
    at_login.handle_input(b"adm", start);
    at_login.handle_timeout(start + 100 * IDLE);
    assert!(!at_login.is_closed());
    let mut no_timeout = Console::new(logged_in(), start);
    assert_eq!(no_timeout.poll_timeout(), None);
    no_timeout.handle_timeout(start + 100 * IDLE);
    assert!(!no_timeout.is_closed());
}

/// What `console` wrote since it was last asked, as the terminal shows it.
fn shown(console: &mut Console, screen: &mut Screenful) -> String {
    while let Some(bytes) = console.poll_transmit() {
        screen.feed(&bytes);
    }
    screen.text()
}

#[test]
fn a_session_whose_login_is_deleted_is_logged_out_and_drops_its_candidate() {
    let start = Instant::now();
    let mut screen = Screenful::default();
    let mut console = Console::new(logged_in(), start);
    console.handle_input(b"configure\r", start);
    let Some(Event::Request(configure)) = console.poll_event() else {
        panic!("configure asks for a candidate");
    };
    console.handle_answer(Fake::changed().answer(configure), start);
    console.handle_input(b"set route example.org mx\rsh", start);
    console.revoke("deleted by root");
    assert!(console.is_closed());
    assert_eq!(
        console.logged_out(),
        Some(&Logout::Revoked("deleted by root".into()))
    );
    assert_eq!(console.poll_event(), Some(Event::Closed));
    let text = shown(&mut console, &mut screen);
    assert!(
        text.ends_with(
            "This login was deleted by root: logged out.\nThe uncommitted changes were dropped.\n"
        ),
        "{text}"
    );
    // Nothing typed after it counts.
    console.handle_input(b"show\r", start);
    assert_eq!(console.poll_event(), None);
}

#[test]
fn a_revocation_waits_for_the_running_request_and_skips_the_typeahead() {
    let start = Instant::now();
    let mut screen = Screenful::default();
    let mut console = Console::new(logged_in(), start);
    console.handle_input(b"test smtp 192.0.2.1\r", start);
    assert!(matches!(console.poll_event(), Some(Event::Request(_))));
    // Typed ahead while the request runs: never carried out.
    console.handle_input(b"restart\r", start);
    console.revoke("deleted by root");
    assert!(!console.is_closed(), "a running request runs to its end");
    console.handle_answer(Answer::Text("250 ok\n".into()), start);
    assert!(console.is_closed());
    assert_eq!(console.poll_event(), Some(Event::Closed));
    assert_eq!(console.poll_event(), None);
    let text = shown(&mut console, &mut screen);
    assert!(
        text.ends_with("250 ok\nThis login was deleted by root: logged out.\n"),
        "{text}"
    );
}

#[test]
fn a_revocation_before_anyone_logs_in_changes_nothing() {
    let start = Instant::now();
    let mut console = Console::new(opts(), start);
    console.handle_input(b"bob", start);
    console.revoke("deleted by root");
    assert!(!console.is_closed());
    assert_eq!(console.logged_out(), None);
    assert_eq!(console.poll_event(), None);
}

#[test]
fn console_logins_are_added_with_a_good_password_and_deleted() {
    let screen = transcript(
        Fake::changed,
        logged_in(),
        &[
            Step::Keys(b"login add bob\rshort\r"),
            Step::Keys(b"drawbridge\r"),
            Step::Keys(b"battery staple\rbattery staple\r"),
            Step::Keys(b"login delete bob\r"),
        ],
    );
    let text = screen.text();
    assert!(!text.contains("battery"), "{text}");
    assert!(
        text.contains("The password must have at least 8 characters.\nNew password:\nThe new password must not be the factory password.\nNew password:\nRetype new password:\nran LoginAdd { user: \"bob\", password: Secret(…) }"),
        "{text}"
    );
    assert!(text.contains("ran LoginDelete { user: \"bob\" }"), "{text}");
}
