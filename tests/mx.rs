//! MX routing through the gateway, with a real dnsmasq as the resolver: preference
//! order, fallback to the next MX, no-MX fallback to the address, null MX, NXDOMAIN.

mod common;

use common::*;

/// The gateway with `* mx` routing via `dns`, MX hosts reached on `port`, internal clients.
fn start(dir: &TempDir, dns: &Dnsmasq, port: u16) -> Gateway {
    Gateway::start(
        dir.path(),
        &format!(
            "set system dns resolver {}\n\
             set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route * mx\n\
             set route * mx-port {port}\n\
             set route * avoid-time 0s\n\
             set queue retry \"1s\"\n",
            dns.addr
        ),
    )
}

#[test]
fn mail_goes_to_the_preferred_mx_and_fails_over_in_order() {
    let dir = TempDir::new("mx-order");
    let sink = Sink::start();
    let port = sink.addr.port();
    // Preference 10 is 127.0.0.2, where nothing listens; 20 is the sink on 127.0.0.1;
    // 30 (127.0.0.3) must never be needed.
    let dns = Dnsmasq::start(&[
        "--mx-host=mx.test,mx30.mx.test,30",
        "--mx-host=mx.test,mx10.mx.test,10",
        "--mx-host=mx.test,mx20.mx.test,20",
        "--host-record=mx10.mx.test,127.0.0.2",
        "--host-record=mx20.mx.test,127.0.0.1",
        "--host-record=mx30.mx.test,127.0.0.3",
    ]);
    let gw = start(&dir, &dns, port);
    let id = send_to(&gw, &["bob@mx.test"]);
    let msgs = sink.wait_for(1);
    assert_eq!(msgs[0].rcpts, ["<bob@mx.test>"]);
    gw.wait_for_log(&format!(
        "{id}: to=<bob@mx.test>, relay=mx20.mx.test[127.0.0.1]:{port}"
    ));
    let log = gw.log_text();
    let tried_10 = log
        .find(&format!("connect to mx10.mx.test[127.0.0.2]:{port}"))
        .expect("MX 10 tried");
    let sent = log.find("status=sent").unwrap();
    assert!(tried_10 < sent, "{log}");
    assert!(!log.contains("127.0.0.3"), "{log}");
}

#[test]
fn a_domain_without_mx_gets_mail_at_its_address() {
    let dir = TempDir::new("mx-none");
    let sink = Sink::start();
    let dns = Dnsmasq::start(&["--host-record=plain.test,127.0.0.1"]);
    let gw = start(&dir, &dns, sink.addr.port());
    send_to(&gw, &["carol@plain.test"]);
    assert_eq!(sink.wait_for(1)[0].rcpts, ["<carol@plain.test>"]);
}

#[test]
fn null_mx_and_nonexistent_domains_fail_permanently_at_once() {
    let dir = TempDir::new("mx-null");
    let sink = Sink::start();
    let dns = Dnsmasq::start(&[
        "--mx-host=nullmx.test,.,0",
        "--mx-host=good.test,mail.good.test,10",
        "--host-record=mail.good.test,127.0.0.1",
    ]);
    let gw = start(&dir, &dns, sink.addr.port());
    let id = send_to(&gw, &["a@nullmx.test", "b@nosuch.test", "c@good.test"]);
    assert_eq!(sink.wait_for(1)[0].rcpts, ["<c@good.test>"]);
    gw.wait_for_log(&format!("{id}: removed"));
    let log = gw.log_text();
    assert!(
        log.contains("to=<a@nullmx.test>, relay=none")
            && log.contains("dsn=5.1.10, status=bounced"),
        "{log}"
    );
    assert!(
        log.contains("to=<b@nosuch.test>, relay=none") && log.contains("dsn=5.1.2, status=bounced"),
        "{log}"
    );
    // None of the three recipients waited: the failures were final at once. (The
    // report to alice@example.org is another message, which this test does not route.)
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("{id}: to=")) && l.contains("status=deferred")),
        "{log}"
    );
    gw.wait_for_log(&format!("{id}: sender non-delivery notification"));
}

#[test]
fn an_mx_that_is_ourselves_is_never_sent_to_and_a_loop_bounces() {
    let dir = TempDir::new("mx-loop");
    let sink = Sink::start();
    // backup.test: preference 10 is the sink, 20 is this gateway (by its host name), 30
    // lies past it. loop.test: this gateway is its best MX.
    let dns = Dnsmasq::start(&[
        "--mx-host=backup.test,mail.backup.test,10",
        "--mx-host=backup.test,gw.example.com,20",
        "--mx-host=backup.test,far.backup.test,30",
        "--host-record=mail.backup.test,127.0.0.1",
        "--host-record=far.backup.test,127.0.0.3",
        "--mx-host=loop.test,gw.example.com,10",
        "--mx-host=loop.test,after.loop.test,20",
        "--host-record=gw.example.com,127.0.0.1",
        "--host-record=after.loop.test,127.0.0.1",
    ]);
    let gw = start(&dir, &dns, sink.addr.port());
    let id = send_to(&gw, &["a@backup.test", "b@loop.test"]);
    assert_eq!(sink.wait_for(1)[0].rcpts, ["<a@backup.test>"]);
    gw.wait_for_log(&format!("{id}: removed"));
    let log = gw.log_text();
    assert!(
        log.contains("to=<b@loop.test>, relay=none")
            && log.contains(
                "dsn=5.4.6, status=bounced (554 5.4.6 mail for loop.test loops back to myself)"
            ),
        "{log}"
    );
    assert!(!log.contains("127.0.0.3"), "{log}");
}

#[test]
fn an_attempt_tries_at_most_ten_addresses() {
    let dir = TempDir::new("mx-many");
    let sink = Sink::start();
    let mut args = Vec::new();
    for n in 1..=12 {
        args.push(format!("--mx-host=many.test,mx{n}.many.test,{n}"));
        args.push(format!("--host-record=mx{n}.many.test,127.0.0.{}", 10 + n));
    }
    let dns = Dnsmasq::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let gw = start(&dir, &dns, sink.addr.port());
    let id = send_to(&gw, &["d@many.test"]);
    gw.wait_for_log(&format!("{id}: to=<d@many.test>"));
    let log = gw.log_text();
    let first = &log[..log.find(&format!("{id}: to=<d@many.test>")).unwrap()];
    let tried: Vec<u32> = (1..=12)
        .filter(|n| first.contains(&format!("connect to mx{n}.many.test[")))
        .collect();
    assert_eq!(tried, (1..=10).collect::<Vec<_>>(), "{log}");
}
