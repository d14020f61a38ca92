//! One console session on the executor: moves bytes between a terminal link and a
//! [`Console`] core, feeds it log lines and its timer, and carries out its requests.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use async_io::Timer;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt as _;

use super::exec;
use crate::gateway::Gateway;
use crate::proto::console::{Answer, Command, Console, Event, Logout, Options, Request};

/// A terminal, as two byte channels: what was typed (closed at the end of input) and
/// what to show.
pub struct Link {
    pub input: Receiver<Vec<u8>>,
    pub output: Sender<Vec<u8>>,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `exit`: the person logged out.
    LoggedOut,
    /// The terminal went away (end of input, or its output closed).
    Gone,
}

enum Wake {
    Input(Option<Vec<u8>>),
    Log(String),
    Answer(Answer),
    Timeout,
    /// The session's login was taken away.
    Revoked(String),
}

/// Runs one session until it ends. `transport` names the terminal in logs and in
/// `show users`.
pub async fn run(gw: Rc<Gateway>, link: &Link, options: Options, transport: &str) -> Ended {
    let logs = crate::io::log::subscribe();
    let preauthenticated = options.user.clone();
    let mut console = Console::new(options, Instant::now());
    let (id, revoked) = gw.consoles.register(transport, preauthenticated.as_deref());
    let ended = drive(&gw, &mut console, link, &logs, (id, &revoked)).await;
    gw.consoles.unregister(id);
    if let Some(user) = console.user() {
        let why = match console.logged_out() {
            Some(Logout::Idle) => ": idle timeout".to_string(),
            Some(Logout::Revoked(why)) => format!(": its login was {why}"),
            None => String::new(),
        };
        log::info!(target: "console", "{user} logged out from {transport}{why}");
    }
    ended
}

async fn drive(
    gw: &Rc<Gateway>,
    console: &mut Console,
    link: &Link,
    logs: &Receiver<String>,
    (id, revoked): (u64, &Receiver<String>),
) -> Ended {
    let mut pending: Option<Pin<Box<dyn Future<Output = Answer>>>> = None;
    // Only what changes nothing may be given up half-way: a commit or a queue
    // operation runs to its end.
    let mut cancellable = false;
    let mut eof = false;
    // The terminal stopped taking output: what runs still runs to its end.
    let mut gone = false;
    loop {
        while let Some(bytes) = console.poll_transmit() {
            if !gone && link.output.send(bytes).await.is_err() {
                gone = true;
                eof = true;
            }
        }
        if let Some(event) = console.poll_event() {
            match event {
                Event::Request(request) => {
                    cancellable = matches!(
                        request,
                        Request::Run(Command::TestSmtp { .. } | Command::TestDns { .. })
                    );
                    let user = console.user().unwrap_or("-").to_string();
                    let transport = gw.consoles.transport(id);
                    pending = Some(Box::pin(exec::answer(gw.clone(), user, transport, request)));
                }
                Event::Cancel => {
                    if cancellable && pending.take().is_some() {
                        console.handle_answer(Answer::Cancelled, Instant::now());
                    }
                }
                Event::Closed => return Ended::LoggedOut,
            }
            continue;
        }
        if let Some(user) = console.user() {
            gw.consoles.logged_in(id, user);
        }
        if (eof || gone) && pending.is_none() {
            return Ended::Gone;
        }
        let input = async {
            if eof {
                std::future::pending::<()>().await;
            }
            Wake::Input(link.input.recv().await.ok())
        };
        let log = async {
            match logs.recv().await {
                Ok(line) => Wake::Log(line),
                Err(_) => std::future::pending().await,
            }
        };
        let answer = async {
            match pending.as_mut() {
                Some(f) => Wake::Answer(f.await),
                None => std::future::pending().await,
            }
        };
        let deadline = console.poll_timeout();
        let timer = async {
            match deadline {
                Some(at) => {
                    Timer::at(at).await;
                    Wake::Timeout
                }
                None => std::future::pending().await,
            }
        };
        let revocation = async {
            match revoked.recv().await {
                Ok(why) => Wake::Revoked(why),
                Err(_) => std::future::pending().await,
            }
        };
        match answer.or(revocation).or(input).or(log).or(timer).await {
            Wake::Input(Some(bytes)) => console.handle_input(&bytes, Instant::now()),
            Wake::Input(None) => eof = true,
            Wake::Log(line) => console.handle_log(&line),
            Wake::Answer(answer) => {
                pending = None;
                console.handle_answer(answer, Instant::now());
            }
            Wake::Timeout => console.handle_timeout(Instant::now()),
            Wake::Revoked(why) => {
                // What changes nothing is given up; anything else ends first.
                console.revoke(&why);
                if cancellable && pending.take().is_some() {
                    console.handle_answer(Answer::Cancelled, Instant::now());
                }
            }
        }
    }
}
