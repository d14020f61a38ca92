//! Bad input, one test per row: over-long and badly framed lines, bare CR and LF,
//! NUL, oversized content, commands out of order, early talkers and silent clients. Each
//! row states the replies expected, the replies that must not appear, whether the session
//! survives and how many messages were committed.

use super::*;

/// `bad_input!(name: tweak, steps, expect [...], absent [...], survives, committed)`.
/// Checks the replies in `expect` appear in order, none of `absent` appears, whether
/// the session is still open (a survivor must then answer NOOP), and how many
/// messages were committed.
macro_rules! bad_input {
    ($($name:ident: $tweak:expr, $steps:expr, expect [$($e:expr),* $(,)?], absent [$($a:expr),* $(,)?],
       survives $survives:expr, committed $n:expr;)*) => {$(
        #[test]
        fn $name() {
            let mut cfg = config();
            let tweak: fn(&mut ServerConfig) = $tweak;
            tweak(&mut cfg);
            let mut steps: Vec<Step> = $steps;
            if $survives {
                steps.push(c("NOOP\r\n"));
            }
            let o = check(&cfg, &steps);
            let expect: &[&[u8]] = &[$($e.as_ref()),*];
            assert!(in_order(&o.out, expect), "{}", String::from_utf8_lossy(&o.out));
            let absent: &[&[u8]] = &[$($a.as_ref()),*];
            for a in absent {
                assert!(!has(&o.out, a), "{} in {}", String::from_utf8_lossy(a), String::from_utf8_lossy(&o.out));
            }
            assert_eq!(o.closed, !$survives, "closed");
            if $survives {
                assert!(o.out.ends_with(OK), "{}", String::from_utf8_lossy(&o.out));
            }
            assert_eq!(o.message_ends(), $n, "committed messages");
            let begins = o.count(|e| matches!(e, Event::MessageBegin));
            let aborts = o.count(|e| matches!(e, Event::MessageAbort));
            assert_eq!(begins, $n + aborts, "every begun message ends or aborts");
        }
    )*};
}

fn same(_: &mut ServerConfig) {}

const BARE: &[u8] = b"550 5.5.2 Message refused: bare <CR> or <LF> in data\r\n";

bad_input! {
    command_line_over_512_octets: same,
        vec![c(format!("EHLO {}\r\n", "a".repeat(600))), c("HELO c.example\r\n")],
        expect [b"500 5.5.2 Error: line too long\r\n", b"250 mx.test\r\n"], absent [b"501"],
        survives true, committed 0;
    command_line_of_exactly_512_octets: same,
        vec![c(format!("NOOP {}\r\n", "a".repeat(505)))],
        expect [GREETING], absent [b"500"],
        survives true, committed 0;
    command_line_of_513_octets: same,
        vec![c(format!("NOOP {}\r\n", "a".repeat(506)))],
        expect [b"500 5.5.2 Error: line too long\r\n"], absent [],
        survives true, committed 0;
    rcpt_with_a_long_path_and_orcpt_is_over_512_octets_and_taken: same,
        with(opening(), vec![c(format!(
            "RCPT TO:<{local}@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;{local}@example.com\r\n",
            local = "a".repeat(200)
        ))]),
        expect [b"250 2.1.5 Ok\r\n"], absent [b"500"],
        survives true, committed 0;
    mail_or_rcpt_over_2048_octets_is_too_long: same,
        with(opening(), vec![c(format!("RCPT TO:<b@example.com> ORCPT=rfc822;{}\r\nNOOP\r\n", "a".repeat(2048)))]),
        expect [b"500 5.5.2 Error: line too long\r\n", b"250 2.0.0 Ok\r\n"], absent [],
        survives true, committed 0;
    text_line_over_the_limit: |c| c.max_line_length = 100,
        in_data(format!("Subject: x\r\n\r\n{}\r\nshort\r\n.\r\n", "b".repeat(99)).as_bytes()),
        expect [b"550 5.6.0 Message refused: line longer than 100 octets\r\n"], absent [QUEUED],
        survives true, committed 0;
    bare_lf_in_data: same, in_data(b"a\r\nb\nc\r\n.\r\n"),
        expect [BARE], absent [QUEUED], survives true, committed 0;
    bare_cr_in_data: same, in_data(b"a\rb\r\n.\r\n"),
        expect [BARE], absent [QUEUED], survives true, committed 0;
    bare_lf_in_command: same, vec![c("NOOP\nNOOP\r\n")],
        expect [b"500 5.5.2 Error: bare <LF> received\r\n", OK], absent [],
        survives true, committed 0;
    bare_cr_in_command: same, vec![c("NO\rOP\r\n")],
        expect [b"500 5.5.2 Error: bare <CR> received\r\n"], absent [],
        survives true, committed 0;
    end_of_data_with_bare_lf_does_not_end: same,
        in_data(b"hello\n.\nVRFY x\r\nHELP\r\n.\r\n"),
        expect [BARE], absent [QUEUED, b"252", b"214"], survives true, committed 0;
    end_of_data_with_bare_cr_does_not_end: same,
        in_data(b"hello\r.\rVRFY x\r\n.\r\n"),
        expect [BARE], absent [QUEUED, b"252"], survives true, committed 0;
    end_of_data_lf_then_crlf_does_not_end: same,
        in_data(b"hello\n.\r\nVRFY x\r\n.\r\n"),
        expect [BARE], absent [QUEUED, b"252"], survives true, committed 0;
    end_of_data_crlf_then_lf_does_not_end: same,
        in_data(b"hello\r\n.\nVRFY x\r\n.\r\n"),
        expect [BARE], absent [QUEUED, b"252"], survives true, committed 0;
    bare_lf_in_bdat_chunk: same,
        with(opening(), vec![c("BDAT 3\r\na\nb"), c("BDAT 2 LAST\r\nc\r")]),
        expect [BARE, b"503 5.5.1 Error: need MAIL command\r\n"], absent [QUEUED],
        survives true, committed 0;
    bdat_with_a_size_that_cannot_be_read_ends_the_session: same,
        with(opening(), vec![c("BDAT 6 FOO\r\nQUIT\r\n")]),
        expect [b"554 5.5.4 Syntax: BDAT size [LAST]; where the chunk ends is unknown, closing\r\n"],
        absent [b"221", QUEUED], survives false, committed 0;
    bdat_with_an_overflowing_size_ends_the_session: same,
        with(opening(), vec![c("BDAT 99999999999999999999 LAST\r\nRSET\r\n")]),
        expect [b"554 5.5.4"], absent [b"250 2.0.0 Ok\r\n", QUEUED], survives false, committed 0;
    bdat_in_an_open_chunked_transaction_with_a_bad_size_aborts_it: same,
        with(opening(), vec![c("BDAT 3\r\nabcBDAT x LAST\r\nNOOP\r\n")]),
        expect [b"250 2.0.0 3 octets received\r\n", b"554 5.5.4"], absent [QUEUED, b"250 2.0.0 Ok\r\n"],
        survives false, committed 0;
    lone_cr_at_end_of_last_bdat_chunk: same,
        with(opening(), vec![c("BDAT 2 LAST\r\na\r")]),
        expect [BARE], absent [QUEUED], survives true, committed 0;
    nul_in_data: same, in_data(b"a\0b\r\n.\r\n"),
        expect [b"550 5.6.0 Message refused: NUL in data\r\n"], absent [QUEUED],
        survives true, committed 0;
    nul_in_command: same, vec![c("NO\0OP\r\n")],
        expect [b"500 5.5.2 Error: NUL in command\r\n"], absent [],
        survives true, committed 0;
    declared_size_over_the_limit: same,
        vec![c("EHLO c.example\r\nMAIL FROM:<a@example.org> SIZE=10001\r\nMAIL FROM:<a@example.org> SIZE=10000\r\n")],
        expect [b"552 5.3.4 Message size exceeds fixed limit\r\n", MAIL_OK], absent [],
        survives true, committed 0;
    data_over_the_size_limit: |c| c.max_message_size = 100,
        in_data(format!("{}.\r\n", "0123456789abcdefghi\r\n".repeat(6)).as_bytes()),
        expect [GO_AHEAD, b"552 5.3.4 Message size exceeds fixed limit\r\n"], absent [QUEUED],
        survives true, committed 0;
    bdat_over_the_size_limit: |c| c.max_message_size = 10,
        with(opening(), vec![c("BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678")]),
        expect [b"250 2.0.0 8 octets received\r\n", b"552 5.3.4 Message size exceeds fixed limit\r\n"],
        absent [QUEUED], survives true, committed 0;
    more_recipients_than_the_limit: |c| c.max_recipients = 2,
        with(opening(), vec![c("RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA\r\nx\r\n.\r\n")]),
        expect [RCPT_OK, RCPT_OK, b"452 4.5.3 Error: too many recipients\r\n", GO_AHEAD, QUEUED], absent [],
        survives true, committed 1;
    mail_before_ehlo: same, vec![c("MAIL FROM:<a@example.org>\r\n")],
        expect [b"503 5.5.1 Error: send HELO/EHLO first\r\n"], absent [],
        survives true, committed 0;
    data_without_rcpt: same,
        vec![c("EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nDATA\r\n")],
        expect [b"503 5.5.1 Error: need RCPT command\r\n"], absent [GO_AHEAD],
        survives true, committed 0;
    pipelined_commands_after_a_failing_mail: same,
        vec![c("EHLO c.example\r\nMAIL FROM:<a@@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n\
                Subject: x\r\n\r\nbody\r\n.\r\n")],
        expect [b"501 5.1.7 Bad sender address syntax\r\n", b"503 5.5.1 Error: need MAIL command\r\n",
                b"503 5.5.1 Error: need MAIL command\r\n", b"500 5.5.2 Error: command not recognized\r\n",
                b"500 5.5.2 Error: command not recognized\r\n", b"500 5.5.2 Error: command not recognized\r\n",
                b"500 5.5.2 Error: command not recognized\r\n"],
        absent [GO_AHEAD, MAIL_OK, RCPT_OK], survives true, committed 0;
    bad_recipient_syntax: same,
        with(opening(), vec![c("RCPT TO:<b@exa mple.com>\r\n")]),
        expect [b"501 5.1.3 Bad recipient address syntax\r\n"], absent [], survives true, committed 0;
    talking_before_the_greeting: |c| c.greet_delay = Duration::from_secs(5),
        vec![c("EHLO c.example\r\n"), secs(10), c("NOOP\r\n")],
        expect [b"554 5.5.1 Error: talked before greeting\r\n"], absent [b"220", b"250"],
        survives false, committed 0;
    silent_client_command_timeout: same,
        vec![c("EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n"), secs(299), c("NO"), secs(299), secs(1)],
        expect [MAIL_OK, b"421 4.4.2 mx.test Error: timeout exceeded\r\n"], absent [OK],
        survives false, committed 0;
    silent_client_data_timeout: same,
        with(in_data(b"Subject: x\r\n"), vec![secs(179), c("more\r\n"), secs(179), secs(1), c(".\r\n")]),
        expect [GO_AHEAD, b"421 4.4.2 mx.test Error: timeout exceeded\r\n"], absent [QUEUED],
        survives false, committed 0;
}
