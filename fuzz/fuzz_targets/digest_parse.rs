//! `DigestCredentials::parse` on arbitrary header values, and the parsed credentials
//! through `Authenticator::verify`. `{NONCE}` in the input is replaced by a nonce the
//! authenticator really issued, so the fuzzer can reach the checks behind the MAC.
//! Invariants: no panic; an authenticated verdict names the credentials' user.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sofia_sip::auth::{Authenticator, DigestCredentials, Verdict};
use sofia_sip::rng::TokenSource;
use sofia_sip::AuthPolicy;

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let _ = DigestCredentials::parse(&text);

    let tokens = TokenSource::new([7; 32]);
    let epoch = Instant::now();
    let mut auth = Authenticator::new(AuthPolicy::default(), epoch);
    let source = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let challenge = auth.challenge(epoch, "sofia.test", false, source, &tokens);
    let nonce = challenge
        .first()
        .and_then(|c| c.split("nonce=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    let text = text.replace("{NONCE}", &nonce);
    let Ok(creds) = DigestCredentials::parse(&text) else {
        return;
    };
    let now = epoch + Duration::from_millis(u64::from(step) * 1000);
    for _ in 0..2 {
        let verdict = auth.verify(
            now,
            "REGISTER",
            &creds,
            "sofia.test",
            Some("right-password"),
            source,
            &tokens,
        );
        if let Verdict::Authenticated(user) = &verdict {
            assert_eq!(user, &creds.username);
        }
        if matches!(verdict, Verdict::Failed) {
            auth.record_failure(now, source, &creds.username);
        }
        let _ = auth.is_blocked(now, source, &creds.username);
    }
    auth.purge(now + Duration::from_secs(3600));
});
