//! Next hops named by host name and client SMTP AUTH, through the gateway as shipped:
//! names resolved by a real dnsmasq, failover within a relay list that mixes a name and
//! an address, the name checked in the next hop's certificate under `musttlsclient`,
//! and logins to a second drawbridge with AUTH on, by SCRAM-SHA-256, PLAIN and LOGIN.

mod common;

use common::*;

#[test]
fn host_names_are_resolved_and_a_mixed_relay_list_fails_over() {
    let dir = TempDir::new("nexthop-names");
    let sink = Sink::start();
    let port = sink.addr.port();
    // smarthost.test is the sink; dead.test is 127.0.0.2, where nothing listens.
    let dns = Dnsmasq::start(&[
        "--host-record=smarthost.test,127.0.0.1",
        "--host-record=dead.test,127.0.0.2",
    ]);
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set system dns resolver {}\n\
             set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com smarthost smarthost.test:{port}\n\
             set route example.net relay dead.test:{port},[127.0.0.1]:{port}\n\
             set route example.org smarthost [nosuch.test]:{port}\n",
            dns.addr
        ),
    );
    // The Postfix form in brackets is taken, and printed as name:port.
    let (ok, shown, _) = gw.cli(&["config", "show"]);
    assert!(ok);
    assert!(
        shown.contains(&format!(
            "set route example.com smarthost smarthost.test:{port}\n"
        )) && shown.contains(&format!(
            "set route example.net relay dead.test:{port},[127.0.0.1]:{port}\n"
        )) && shown.contains(&format!(
            "set route example.org smarthost nosuch.test:{port}\n"
        )),
        "{shown}"
    );

    let id = send_to(&gw, &["bob@example.com"]);
    assert_eq!(sink.wait_for(1)[0].rcpts, ["<bob@example.com>"]);
    gw.wait_for_log(&format!(
        "{id}: to=<bob@example.com>, relay=smarthost.test[127.0.0.1]:{port}"
    ));

    // The first connection starts at the name: its address refuses, the literal takes
    // the mail.
    let id = send_to(&gw, &["carol@example.net"]);
    assert_eq!(sink.wait_for(2)[1].rcpts, ["<carol@example.net>"]);
    gw.wait_for_log(&format!(
        "{id}: to=<carol@example.net>, relay=127.0.0.1[127.0.0.1]:{port}"
    ));
    let log = gw.log_text();
    let refused = log
        .find(&format!("connect to dead.test[127.0.0.2]:{port}"))
        .expect("dead.test's address tried first");
    assert!(
        refused < log.find(&format!("{id}: to=<carol@example.net>")).unwrap(),
        "{log}"
    );

    // A name that does not resolve: the mail waits, with the reason.
    let id = send_to(&gw, &["dave@example.org"]);
    gw.wait_for_log(&format!("{id}: to=<dave@example.org>, relay=none, delay="));
    gw.wait_for_log("status=deferred (451 4.4.4 No address found for relay host nosuch.test)");
    gw.wait_for_log("address lookup for relay host nosuch.test: 451 4.4.4");
    assert_eq!(sink.count(), 2);
}

/// A next hop's certificate must carry the name the route gives under `musttlsclient`:
/// a second drawbridge serves a certificate for smarthost.test, signed by a CA the
/// first one trusts; reached as smarthost.test it gets the mail, reached as
/// wrong-name.test (the same address) the mail waits.
#[test]
fn the_host_name_is_the_name_tls_verifies() {
    let (da, db) = (TempDir::new("nexthop-tls-a"), TempDir::new("nexthop-tls-b"));
    let pki = db.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = TestCa::new(&pki);
    let (cert, key) = ca.server("hop", "smarthost.test", "DNS:smarthost.test");
    let chain = pki.join("hop-chain.pem");
    std::fs::write(
        &chain,
        [
            std::fs::read(&cert).unwrap(),
            std::fs::read(&ca.cert).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let b_state = db.path().join("state");
    let imported = drawbridge_with_input(
        &b_state,
        &[
            "certificate",
            "import",
            "hop",
            "--chain",
            chain.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        "",
    );
    assert!(imported.starts_with("imported hop:"), "{imported}");
    let sink = Sink::start();
    let b = Gateway::start(
        db.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route * relay [127.0.0.1]:{}\n",
            sink.addr.port()
        ),
    );
    let dns = Dnsmasq::start(&[
        "--host-record=smarthost.test,127.0.0.1",
        "--host-record=wrong-name.test,127.0.0.1",
    ]);
    let a = Gateway::start(
        da.path(),
        &format!(
            "set system dns resolver {}\n\
             set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com smarthost smarthost.test:{port}\n\
             set route example.com channel tcp_out\n\
             set route example.net smarthost wrong-name.test:{port}\n\
             set route example.net channel tcp_out\n\
             set channel tcp_out keywords \"musttlsclient\"\n\
             set tls server-ca-file \"{}\"\n",
            dns.addr,
            ca.cert.display(),
            port = b.inbound
        ),
    );
    send_to(&a, &["bob@example.com"]);
    assert_eq!(sink.wait_for(1)[0].rcpts, ["<bob@example.com>"]);
    a.wait_for_log(&format!(
        "Verified TLS connection established to 127.0.0.1[127.0.0.1]:{}",
        b.inbound
    ));

    let id = send_to(&a, &["carol@example.net"]);
    a.wait_for_log(&format!("{id}: to=<carol@example.net>"));
    a.wait_for_log("status=deferred (454 4.7.5 TLS handshake failed");
    let log = a.log_text();
    assert!(
        log.contains("TLS handshake with 127.0.0.1[127.0.0.1]")
            && log.contains("certificate not valid for name \"wrong-name.test\""),
        "{log}"
    );
    assert_eq!(sink.count(), 1);
}

/// The next hop's configuration: AUTH on, and the mechanisms it offers to the outside;
/// PLAIN and LOGIN only under TLS, SCRAM-SHA-256 in clear too.
fn next_hop_config(inbound: u16, outbound: u16, sink: u16, mechanisms: &str) -> String {
    Gateway::config_text(
        inbound,
        outbound,
        &format!(
            "set classify 10 remote 0.0.0.0/0 category EXTERNAL\n\
             set service inbound auth yes\n\
             set ruleset EXTERNAL mechanisms \"{mechanisms}\"\n\
             set ruleset EXTERNAL restrict PLAIN tls\n\
             set ruleset EXTERNAL restrict LOGIN tls\n\
             set route * smarthost [127.0.0.1]:{sink}\n"
        ),
    )
}

/// Logins to a second drawbridge: SCRAM-SHA-256 when offered, else PLAIN, else LOGIN,
/// each succeeding; SCRAM in clear only where `auth danger-cleartext` allows it, no
/// password at all otherwise; a wrong password defers with a log line, and the mail
/// stays queued.
#[test]
fn auth_to_a_next_hop_with_each_mechanism_and_a_wrong_password() {
    let (da, db) = (
        TempDir::new("nexthop-auth-a"),
        TempDir::new("nexthop-auth-b"),
    );
    let sink = Sink::start();
    let (b_in, b_out) = (free_port(), free_port());
    let b_config = db.path().join("gateway.conf");
    let write_b = |mechanisms: &str| {
        std::fs::write(
            &b_config,
            next_hop_config(b_in, b_out, sink.addr.port(), mechanisms),
        )
        .unwrap();
    };
    write_b("SCRAM-SHA-256 PLAIN LOGIN");
    let b_state = db.path().join("state");
    drawbridge_with_input(
        &b_state,
        &["password", "add", "--user", "relay"],
        "s3cret pass\n",
    );
    let mut b = Gateway::start_with(db.path(), b_config.clone(), b_in, b_out);

    let a_state = da.path().join("state");
    let out = drawbridge_with_input(&a_state, &["secret", "set", "relay"], "s3cret pass\n");
    assert_eq!(out, "set the password of relay\n");
    assert!(
        !std::fs::read(a_state.join("secrets.db"))
            .unwrap()
            .windows(6)
            .any(|w| w == b"s3cret"),
        "the password is sealed"
    );
    let hop = format!("[127.0.0.1]:{b_in}");
    let a = Gateway::start(
        da.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com smarthost {hop}\n\
             set route example.com auth user relay\n\
             set route example.org smarthost {hop}\n\
             set route example.org auth user relay\n\
             set route example.org auth danger-cleartext yes\n\
             set route example.org channel tcp_clear\n\
             set route example.net smarthost {hop}\n\
             set route example.net auth user relay\n\
             set route example.net channel tcp_clear\n\
             set channel tcp_clear keywords \"notlsclient\"\n\
             set queue retry \"1s\"\n"
        ),
    );
    // `config show` names the user, never the password; `secret show` the same.
    let (_, shown, _) = a.cli(&["config", "show"]);
    assert!(
        shown.contains("set route example.com auth user relay\n"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"));
    let (_, names, _) = a.cli(&["secret", "show"]);
    assert_eq!(names, "relay\n");

    let logged_in = |mechanism: &str| {
        format!("authenticated to 127.0.0.1[127.0.0.1]:{b_in} as relay with {mechanism}")
    };
    // Over TLS the strongest: SCRAM-SHA-256, the next hop's signature checked.
    let id = send_to(&a, &["bob@example.com"]);
    assert_eq!(sink.wait_for(1)[0].rcpts, ["<bob@example.com>"]);
    a.wait_for_log(&logged_in("SCRAM-SHA-256"));
    a.wait_for_log(&format!("{id}: to=<bob@example.com>, relay=127.0.0.1"));
    b.wait_for_log("sasl_method=SCRAM-SHA-256, sasl_username=relay");
    let content = String::from_utf8_lossy(&sink.wait_for(1)[0].content).into_owned();
    assert!(content.contains("with ESMTPSA"), "{content}");

    // In clear, where allowed: SCRAM is what the next hop offers there.
    send_to(&a, &["carol@example.org"]);
    assert_eq!(sink.wait_for(2)[1].rcpts, ["<carol@example.org>"]);
    let content = String::from_utf8_lossy(&sink.wait_for(2)[1].content).into_owned();
    assert!(content.contains("with ESMTPA "), "{content}");

    // In clear, not allowed: no AUTH is sent and the mail waits.
    let id = send_to(&a, &["dave@example.net"]);
    a.wait_for_log(&format!("{id}: to=<dave@example.net>"));
    a.wait_for_log("status=deferred (454 4.7.0 Not sending the password without TLS");
    assert_eq!(
        b.log_text().matches("sasl_username=relay").count(),
        2,
        "{}",
        b.log_text()
    );

    // PLAIN, then LOGIN, when they are the best the next hop offers. (A connection
    // kept open across the restart fails on its next use; the retry a second later
    // opens a new one.)
    for (mechanisms, used, rcpt, n) in [
        ("PLAIN LOGIN", "PLAIN", "erin@example.com", 3),
        ("LOGIN", "LOGIN", "frank@example.com", 4),
    ] {
        write_b(mechanisms);
        b.restart();
        send_to(&a, &[rcpt]);
        assert_eq!(sink.wait_for(n)[n - 1].rcpts, [format!("<{rcpt}>")]);
        a.wait_for_log(&logged_in(used));
    }

    // A wrong password: the 535 defers every job of that connection, with a log line;
    // the message stays queued for its lifetime.
    // (A connection already logged in stays so: the restart ends it.)
    drawbridge_with_input(&a_state, &["secret", "set", "relay"], "wrong\n");
    b.restart();
    let id = send_to(&a, &["grace@example.com"]);
    a.wait_for_log(&format!(
        "authentication to 127.0.0.1[127.0.0.1]:{b_in} as relay failed: 535 5.7.8"
    ));
    a.wait_for_log(&format!("{id}: to=<grace@example.com>, relay=none, delay="));
    a.wait_for_log("status=deferred (454 4.7.0 Authentication as relay failed: 535 5.7.8");
    let (ok, queue, _) = a.cli(&["queue", "list"]);
    assert!(ok && queue.contains(&id), "{queue}");
    assert_eq!(sink.count(), 4);
}
