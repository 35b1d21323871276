//! The SIP core alone, without sockets: how long the endpoint takes per authenticated
//! registration (REGISTER, 401 challenge, REGISTER with digest, 200), in virtual time
//! at a fixed request rate so that transactions live and expire as on a real server.
//! bench/sip_core.sh runs it; the figure bounds what the UDP shell can reach.
//!
//!   register_core [REGISTRATIONS] [RATE_PER_SECOND]    (default 200000 at 6000/s)

#![allow(clippy::disallowed_methods)] // reason: a benchmark times the core on the real clock

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{config, drain, response, t0, Uac};
use sofia_sip::{Endpoint, Transport};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().map_or(200_000, |a| a.parse().expect("a count"));
    let rate: u32 = args.next().map_or(6000, |a| a.parse().expect("a rate"));
    let start = t0();
    let mut now = start;
    let step = Duration::from_secs(1) / rate;
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("1000", "secret1000", "198.51.100.7:5060");
    let uri = "sip:sofia.test";
    let to = "<sip:1000@sofia.test>";
    let contact = "Contact: <sip:1000@198.51.100.7:5060>".to_string();
    let mut in_core = Duration::ZERO;
    let mut samples = Vec::with_capacity(count as usize);
    for i in 0..count {
        now += step;
        // A new Call-ID and From tag per registration, as SIPp's load sends.
        uac.call_id = format!("reg-{i}");
        uac.from_tag = format!("tag-{i}");
        uac.cseq = 1;
        let first = uac.request("REGISTER", uri, to, std::slice::from_ref(&contact), b"");
        let t = Instant::now();
        fire_timers(&mut ep, now);
        ep.handle_datagram(now, uac.addr, Transport::Udp, &first);
        let sent = drain(&mut ep);
        let mut spent = t.elapsed();
        let challenge = response(&sent[0]);
        assert_eq!(challenge.status, 401, "the first REGISTER is challenged");
        uac.nc = 0;
        uac.cseq = 2;
        let auth = uac.authorization(&challenge, "REGISTER", uri);
        let second = uac.request("REGISTER", uri, to, &[contact.clone(), auth], b"");
        let t = Instant::now();
        ep.handle_datagram(now, uac.addr, Transport::Udp, &second);
        let sent = drain(&mut ep);
        spent += t.elapsed();
        assert_eq!(
            response(&sent[0]).status,
            200,
            "registration {i} is accepted"
        );
        in_core += spent;
        samples.push(spent);
    }
    samples.sort();
    let (server, client) = ep.transaction_count();
    println!(
        "registrations={count} rate={rate}/s virtual_secs={:.1} core_us_per_registration={:.2} \
         p50_us={:.2} p99_us={:.2} registrations_per_core_second={:.0} live_transactions={}",
        (now - start).as_secs_f64(),
        in_core.as_secs_f64() * 1e6 / f64::from(count),
        samples[samples.len() / 2].as_secs_f64() * 1e6,
        samples[samples.len() * 99 / 100].as_secs_f64() * 1e6,
        f64::from(count) / in_core.as_secs_f64(),
        server + client,
    );
}

fn fire_timers(ep: &mut Endpoint, now: Instant) {
    while ep.poll_timeout().is_some_and(|at| at <= now) {
        ep.handle_timeout(now);
        drain(ep);
    }
}
