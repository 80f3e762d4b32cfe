//! Every scheme against known vectors, malformed input, rotation and clock edges.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use switchboard_verify::{
    ConfigError, Encoding, HeaderLookup, Scheme, Verified, Verifier, VerifyError, encode_whsec,
    sign,
};

// Standard Webhooks spec / reference-library test vector.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
    Verifier::new(scheme, secrets.iter().map(|s| s.to_string()).collect()).unwrap()
}

fn sw_headers(id: &str, ts: &str, sig: &str) -> Vec<(String, String)> {
    vec![
        ("Webhook-Id".into(), id.into()),
        ("WEBHOOK-TIMESTAMP".into(), ts.into()),
        ("webhook-signature".into(), sig.into()),
    ]
}

fn sw_verify(secrets: &[&str], sig: &str, now: i64) -> Result<Verified, VerifyError> {
    verifier(Scheme::standard_webhooks(), secrets).verify(
        &sw_headers(SW_ID, &SW_TS.to_string(), sig),
        SW_BODY,
        now,
    )
}

fn one(name: &str, value: &str) -> Vec<(String, String)> {
    vec![(name.to_owned(), value.to_owned())]
}

#[test]
fn rfc4231_hmac_sha256_vectors() {
    let hex = Scheme::HmacHeader {
        header: "X-Sig".into(),
        prefix: String::new(),
        encoding: Encoding::Hex,
    };
    // RFC 4231 test cases 1 and 2.
    let key1 = "\u{b}".repeat(20);
    let cases: [(&str, &[u8], &str); 2] = [
        (
            &key1,
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            "Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
    ];
    for (key, data, expected) in cases {
        let headers = sign(&hex, key, data, "", 0).unwrap();
        assert_eq!(headers, one("X-Sig", expected));
        // Upper-case hex is accepted too.
        let upper = one("x-sig", &expected.to_uppercase());
        assert!(
            verifier(hex.clone(), &[key])
                .verify(&upper, data, 0)
                .is_ok()
        );
    }
}

#[test]
fn standard_webhooks_spec_vector() {
    let headers = sign(
        &Scheme::standard_webhooks(),
        SW_SECRET,
        SW_BODY,
        SW_ID,
        SW_TS,
    )
    .unwrap();
    let expected: Vec<(String, String)> = sw_headers(SW_ID, "1614265330", SW_SIG)
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    assert_eq!(headers, expected);
    let ok = sw_verify(&[SW_SECRET], SW_SIG, SW_TS).unwrap();
    assert_eq!(ok.delivery_id.as_deref(), Some(SW_ID));
    // The bare base64 secret (no `whsec_`) is accepted, as by the reference libraries.
    assert!(sw_verify(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], SW_SIG, SW_TS).is_ok());
}

#[test]
fn standard_webhooks_rotation_and_signature_lists() {
    let other = encode_whsec(&[7u8; 32]);
    // The second configured secret matches.
    assert!(sw_verify(&[&other, SW_SECRET], SW_SIG, SW_TS).is_ok());
    // The sender lists several signatures (its own rotation); any valid one is enough.
    let listed = format!(
        "v1,AAAA v1a,ed25519sig {SW_SIG}  v1,{}",
        STANDARD.encode([1u8; 32])
    );
    assert!(sw_verify(&[SW_SECRET], &listed, SW_TS).is_ok());
    // Only other versions: not supported. Nothing at all: malformed.
    assert_eq!(
        sw_verify(&[SW_SECRET], "v1a,abc v2,def", SW_TS),
        Err(VerifyError::NoSupportedSignature)
    );
    assert!(matches!(
        sw_verify(&[SW_SECRET], "   ", SW_TS),
        Err(VerifyError::MalformedHeader { .. })
    ));
    // A request cannot make us try unboundedly many signatures.
    let many = vec!["v1,AAAA"; 17].join(" ") + " " + SW_SIG;
    assert!(matches!(
        sw_verify(&[SW_SECRET], &many, SW_TS),
        Err(VerifyError::MalformedHeader { .. })
    ));
}

#[test]
fn truncated_and_wrong_signatures_never_match() {
    let full = STANDARD.decode(&SW_SIG[3..]).unwrap();
    assert_eq!(full.len(), 32);
    let truncated = [
        "v1,".to_owned(),
        "v1,g".to_owned(),
        "v1,g0hM".to_owned(),
        format!("v1,{}", STANDARD.encode(&full[..31])),
        format!("v1,{}", &SW_SIG[3..SW_SIG.len() - 2]),
        format!("v1,{}", STANDARD.encode([&full[..], &[0]].concat())),
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
    ];
    for sig in &truncated {
        assert_eq!(
            sw_verify(&[SW_SECRET], sig, SW_TS),
            Err(VerifyError::SignatureMismatch),
            "{sig}"
        );
    }
    // Dropping only the `=` padding is not truncation: same 32 bytes, still valid.
    assert!(sw_verify(&[SW_SECRET], SW_SIG.trim_end_matches('='), SW_TS).is_ok());
    // Wrong key.
    let wrong = encode_whsec(&[9u8; 24]);
    assert_eq!(
        sw_verify(&[&wrong], SW_SIG, SW_TS),
        Err(VerifyError::SignatureMismatch)
    );
    // Same checks for a single-header MAC.
    let scheme = Scheme::hmac_header_default();
    let v = verifier(scheme.clone(), &["s3cret"]);
    let good = sign(&scheme, "s3cret", b"body", "", 0).unwrap();
    let value = good[0].1.clone();
    let mac = STANDARD.decode(&value).unwrap();
    for bad in [
        String::new(),
        STANDARD.encode(&mac[..31]),
        value[..1].to_owned(),
    ] {
        let h = one("x-genesys-webhook-signature", &bad);
        assert!(v.verify(&h, b"body", 0).is_err(), "{bad:?}");
    }
    assert!(v.verify(&good, b"body", 0).is_ok());
}

#[test]
fn tolerance_edges() {
    for (now, ok) in [
        (SW_TS, true),
        (SW_TS + 300, true),
        (SW_TS - 300, true),
        (SW_TS + 301, false),
        (SW_TS - 301, false),
        (i64::MAX, false),
        (i64::MIN, false),
    ] {
        let got = sw_verify(&[SW_SECRET], SW_SIG, now);
        assert_eq!(
            got.is_ok(),
            ok,
            "now = ts {:+}",
            i128::from(now) - i128::from(SW_TS)
        );
        if !ok {
            assert!(matches!(
                got,
                Err(VerifyError::TimestampOutsideTolerance {
                    tolerance_secs: 300,
                    ..
                })
            ));
        }
    }
    let err = sw_verify(&[SW_SECRET], SW_SIG, SW_TS + 301).unwrap_err();
    assert_eq!(
        err.to_string(),
        "webhook-timestamp is -301 s from now; tolerance is ±300 s"
    );
    assert_eq!(err.public_reason(), "timestamp outside tolerance");
    // A custom tolerance.
    let strict = verifier(Scheme::StandardWebhooks { tolerance_secs: 0 }, &[SW_SECRET]);
    let h = sw_headers(SW_ID, "1614265330", SW_SIG);
    assert!(strict.verify(&h, SW_BODY, SW_TS).is_ok());
    assert!(strict.verify(&h, SW_BODY, SW_TS + 1).is_err());
}

#[test]
fn malformed_standard_webhooks_headers() {
    let v = verifier(Scheme::standard_webhooks(), &[SW_SECRET]);
    let check = |id: &str, ts: &str, expected: VerifyError| {
        let got = v.verify(&sw_headers(id, ts, SW_SIG), SW_BODY, SW_TS);
        assert_eq!(got, Err(expected), "id {id:?} ts {ts:?}");
    };
    for ts in [
        "",
        "abc",
        "-5",
        "+1614265330",
        "1614265330.0",
        "1e9",
        "16142 65330",
        "99999999999999999999",
    ] {
        check(SW_ID, ts, VerifyError::MalformedTimestamp);
    }
    let bad_id = VerifyError::MalformedHeader {
        header: "webhook-id".into(),
        reason: "must be non-empty and contain no `.`",
    };
    check("", "1614265330", bad_id.clone());
    check("a.b", "1614265330", bad_id);
    let non_utf8: Vec<(String, Vec<u8>)> = vec![
        ("webhook-id".into(), vec![0xff, 0xfe]),
        ("webhook-timestamp".into(), b"1614265330".to_vec()),
        ("webhook-signature".into(), SW_SIG.as_bytes().to_vec()),
    ];
    assert!(matches!(
        v.verify(&non_utf8, SW_BODY, SW_TS),
        Err(VerifyError::MalformedHeader {
            reason: "not UTF-8",
            ..
        })
    ));
    // Each missing header is named.
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let h: Vec<(String, String)> = sw_headers(SW_ID, "1614265330", SW_SIG)
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(missing))
            .collect();
        let err = v.verify(&h, SW_BODY, SW_TS).unwrap_err();
        assert_eq!(
            err,
            VerifyError::MissingHeader {
                header: missing.into()
            }
        );
        assert_eq!(err.public_reason(), "missing signature header");
    }
}

#[test]
fn hub_signature_256_is_base64_with_prefix() {
    let secret = "open-messaging-secret";
    let body = br#"{"id":"m1","text":"hi"}"#;
    let v = verifier(Scheme::HubSignature256, &[secret]);
    let headers = sign(&Scheme::HubSignature256, secret, body, "", 0).unwrap();
    assert_eq!(headers[0].0, "X-Hub-Signature-256");
    assert!(headers[0].1.starts_with("sha256="));
    let tag = STANDARD.decode(&headers[0].1[7..]).unwrap();
    assert_eq!(tag.len(), 32);
    assert_eq!(
        v.verify(&headers, body, 0),
        Ok(Verified { delivery_id: None })
    );

    let with = |value: String| one("x-hub-signature-256", &value);
    assert!(matches!(
        v.verify(&with(format!("sha1={}", STANDARD.encode(&tag))), body, 0),
        Err(VerifyError::MalformedHeader {
            reason: "missing the expected prefix",
            ..
        })
    ));
    // GitHub's hex form is not what Genesys sends; it does not verify.
    assert!(
        v.verify(&with(format!("sha256={}", hex::encode(&tag))), body, 0)
            .is_err()
    );
    assert!(matches!(
        v.verify(&with("sha256=!!".into()), body, 0),
        Err(VerifyError::MalformedHeader {
            reason: "signature is not base64",
            ..
        })
    ));
    assert_eq!(
        v.verify(&Vec::<(String, String)>::new(), body, 0),
        Err(VerifyError::MissingHeader {
            header: "X-Hub-Signature-256".into()
        })
    );
}

#[test]
fn hmac_header_variants() {
    let hex = Scheme::HmacHeader {
        header: "X-Signature".into(),
        prefix: "sha256=".into(),
        encoding: Encoding::Hex,
    };
    let h = sign(&hex, "k", b"b", "", 0).unwrap();
    assert!(h[0].1.starts_with("sha256=") && h[0].1.len() == 7 + 64);
    let v = verifier(hex, &["k"]);
    assert!(v.verify(&h, b"b", 0).is_ok());
    let odd = one("x-signature", &h[0].1[..h[0].1.len() - 1]);
    assert!(matches!(
        v.verify(&odd, b"b", 0),
        Err(VerifyError::MalformedHeader {
            reason: "signature is not hex",
            ..
        })
    ));
    // The seeds' default: bare base64 in X-Genesys-Webhook-Signature; unpadded accepted.
    let seed = Scheme::hmac_header_default();
    let h = sign(&seed, "k", b"b", "", 0).unwrap();
    assert_eq!(h[0].0, "X-Genesys-Webhook-Signature");
    let unpadded = one(&h[0].0, h[0].1.trim_end_matches('='));
    assert!(verifier(seed, &["k"]).verify(&unpadded, b"b", 0).is_ok());
}

#[test]
fn api_key_and_basic() {
    let api = Scheme::ApiKey {
        header: "X-Api-Key".into(),
    };
    let v = verifier(api.clone(), &["old-key", "new-key"]);
    assert!(v.verify(&one("x-api-key", "new-key"), b"", 0).is_ok());
    assert!(v.verify(&one("X-API-KEY", "old-key"), b"", 0).is_ok());
    for wrong in ["new-ke", "new-key2", "", "NEW-KEY"] {
        assert_eq!(
            v.verify(&one("x-api-key", wrong), b"", 0),
            Err(VerifyError::InvalidCredentials)
        );
    }
    let missing = v.verify(&one("x-other", "new-key"), b"", 0).unwrap_err();
    assert_eq!(missing.public_reason(), "missing credentials");
    assert_eq!(
        sign(&api, "new-key", b"", "", 0).unwrap(),
        one("X-Api-Key", "new-key")
    );

    let basic = verifier(Scheme::Basic, &["genesys:pa:ss"]);
    let good = sign(&Scheme::Basic, "genesys:pa:ss", b"", "", 0).unwrap();
    assert_eq!(
        good,
        one(
            "Authorization",
            &format!("Basic {}", STANDARD.encode("genesys:pa:ss"))
        )
    );
    assert!(basic.verify(&good, b"", 0).is_ok());
    let lower = one(
        "authorization",
        &format!("basic   {}", STANDARD.encode("genesys:pa:ss")),
    );
    assert!(basic.verify(&lower, b"", 0).is_ok());
    let check = |value: &str, expected: &str| {
        let err = basic
            .verify(&one("Authorization", value), b"", 0)
            .unwrap_err();
        assert_eq!(err.public_reason(), expected, "{value}");
    };
    check(
        &format!("Basic {}", STANDARD.encode("genesys:wrong")),
        "invalid credentials",
    );
    check(
        &format!("Bearer {}", STANDARD.encode("genesys:pa:ss")),
        "malformed credentials",
    );
    check("Basic", "malformed credentials");
    check("Basic ***", "malformed credentials");
    assert_eq!(
        basic
            .verify(&Vec::<(String, String)>::new(), b"", 0)
            .unwrap_err()
            .public_reason(),
        "missing credentials"
    );
}

#[test]
fn none_accepts_everything_and_takes_no_secrets() {
    let v = verifier(Scheme::None, &[]);
    assert_eq!(
        v.verify(&Vec::<(String, String)>::new(), b"anything", 0),
        Ok(Verified::default())
    );
    assert_eq!(sign(&Scheme::None, "", b"", "", 0).unwrap(), vec![]);
}

#[test]
fn config_errors() {
    let check = |scheme: Scheme, secrets: &[&str], expected: ConfigError| {
        let got = Verifier::new(
            scheme.clone(),
            secrets.iter().map(|s| s.to_string()).collect(),
        );
        assert_eq!(got.unwrap_err(), expected, "{scheme:?} {secrets:?}");
    };
    let sw = Scheme::standard_webhooks;
    check(
        sw(),
        &[],
        ConfigError::NoSecrets {
            scheme: "standard-webhooks",
        },
    );
    check(Scheme::None, &["x"], ConfigError::SecretsNotAllowed);
    check(
        Scheme::hmac_header_default(),
        &["ok", ""],
        ConfigError::EmptySecret { index: 1 },
    );
    check(
        sw(),
        &["whsec_***"],
        ConfigError::InvalidWhsec {
            index: 0,
            reason: "not base64",
        },
    );
    check(
        sw(),
        &[&encode_whsec(&[1; 16])],
        ConfigError::WhsecLength { index: 0, len: 16 },
    );
    check(
        sw(),
        &[&encode_whsec(&[1; 65])],
        ConfigError::WhsecLength { index: 0, len: 65 },
    );
    check(
        Scheme::Basic,
        &["nocolon"],
        ConfigError::BasicWithoutColon { index: 0 },
    );
    let api = || Scheme::ApiKey {
        header: "X-Key".into(),
    };
    check(
        api(),
        &["line\nbreak"],
        ConfigError::NotAHeaderValue { index: 0 },
    );
    check(
        api(),
        &[" padded"],
        ConfigError::NotAHeaderValue { index: 0 },
    );
    check(
        Scheme::ApiKey {
            header: "Bad Header".into(),
        },
        &["k"],
        ConfigError::InvalidHeaderName {
            header: "Bad Header".into(),
        },
    );
    check(
        Scheme::HmacHeader {
            header: String::new(),
            prefix: String::new(),
            encoding: Encoding::Hex,
        },
        &["k"],
        ConfigError::InvalidHeaderName {
            header: String::new(),
        },
    );
    // Boundaries that are accepted.
    assert!(Verifier::new(sw(), vec![encode_whsec(&[1; 24]), encode_whsec(&[2; 64])]).is_ok());
    assert!(Verifier::new(Scheme::HubSignature256, vec!["short".into()]).is_ok());
    // sign validates the same way, plus Standard Webhooks' id and time rules.
    assert_eq!(
        sign(&sw(), "whsec_***", b"", "id", 1),
        Err(ConfigError::InvalidWhsec {
            index: 0,
            reason: "not base64"
        })
    );
    assert_eq!(
        sign(&sw(), SW_SECRET, b"", "a.b", 1),
        Err(ConfigError::InvalidMessageId)
    );
    assert_eq!(
        sign(&sw(), SW_SECRET, b"", "", 1),
        Err(ConfigError::InvalidMessageId)
    );
    assert_eq!(
        sign(&sw(), SW_SECRET, b"", "id", -1),
        Err(ConfigError::NegativeTimestamp(-1))
    );
}

// See: fuzz/artifacts/verify_normalize (RELIABILITY.md ("Fuzzing"), finding verify_normalize-1): `sign`
// accepted the id " ", and `verify`, which strips the whitespace HTTP strips, refused what `sign`
// produced. Padded ids ("a ") failed the same way with a signature mismatch.
#[test]
fn fuzz_verify_normalize_1_sign_refuses_ids_verify_reads_differently() {
    let v = verifier(Scheme::standard_webhooks(), &[SW_SECRET]);
    let check = |id: &str, accepted: bool| {
        let signed = sign(&Scheme::standard_webhooks(), SW_SECRET, b"{}", id, SW_TS);
        if accepted {
            let headers = signed.unwrap_or_else(|e| panic!("{id:?} refused: {e}"));
            let ok = v.verify(&headers, b"{}", SW_TS);
            assert_eq!(ok.map(|v| v.delivery_id), Ok(Some(id.to_owned())), "{id:?}");
        } else {
            assert_eq!(signed, Err(ConfigError::InvalidMessageId), "{id:?}");
        }
    };
    for id in [
        " ", " a", "a ", "\ta", "a\n", "a\r", "a\nb", "a\0b", "a\u{7f}",
    ] {
        check(id, false);
    }
    for id in ["a", "a b", "a\tb", "msg_ü", "msg_1"] {
        check(id, true);
    }
}

#[test]
fn secrets_and_expected_macs_never_leak() {
    let secret = "super-secret-value-1234";
    let v = verifier(Scheme::HubSignature256, &[secret]);
    let debug = format!("{v:?}");
    assert!(
        !debug.contains(secret) && debug.contains("<redacted>"),
        "{debug}"
    );
    let expected = sign(&Scheme::HubSignature256, secret, b"body", "", 0).unwrap();
    let err = v.verify(&expected, b"tampered", 0).unwrap_err();
    assert_eq!(err, VerifyError::SignatureMismatch);
    for text in [
        err.to_string(),
        format!("{err:?}"),
        err.public_reason().to_owned(),
    ] {
        assert!(
            !text.contains(&expected[0].1[7..]) && !text.contains(secret),
            "{text}"
        );
    }
    let err = Verifier::new(Scheme::Basic, vec![secret.into()]).unwrap_err();
    assert!(!err.to_string().contains(secret));
}

#[test]
fn header_lookup_is_case_insensitive_and_takes_the_first() {
    let h: Vec<(String, Vec<u8>)> = vec![
        ("Content-Type".into(), b"a".to_vec()),
        ("content-type".into(), b"b".to_vec()),
    ];
    assert_eq!(h.get("CONTENT-TYPE"), Some(&b"a"[..]));
    assert_eq!(HeaderLookup::get(&h, "missing"), None);
    let arr = [("X-A", "1")];
    assert_eq!(arr.get("x-a"), Some(&b"1"[..]));
}

#[test]
fn scheme_deserializes_from_toml() {
    #[derive(serde::Deserialize)]
    struct Wrap {
        auth: Scheme,
    }
    let parse = |s: &str| toml::from_str::<Wrap>(s).map(|w| w.auth);
    assert_eq!(
        parse(r#"auth = { type = "standard-webhooks" }"#).unwrap(),
        Scheme::standard_webhooks()
    );
    assert_eq!(
        parse(r#"auth = { type = "standard-webhooks", tolerance_secs = 60 }"#).unwrap(),
        Scheme::StandardWebhooks { tolerance_secs: 60 }
    );
    assert_eq!(
        parse(r#"auth = { type = "hmac-header" }"#).unwrap(),
        Scheme::hmac_header_default()
    );
    assert_eq!(
        parse(
            r#"auth = { type = "hmac-header", header = "X-S", prefix = "sha256=", encoding = "hex" }"#
        )
        .unwrap(),
        Scheme::HmacHeader {
            header: "X-S".into(),
            prefix: "sha256=".into(),
            encoding: Encoding::Hex
        }
    );
    assert_eq!(
        parse(r#"auth = { type = "hub-signature256" }"#).unwrap(),
        Scheme::HubSignature256
    );
    assert_eq!(
        parse(r#"auth = { type = "api-key", header = "X-K" }"#).unwrap(),
        Scheme::ApiKey {
            header: "X-K".into()
        }
    );
    assert_eq!(
        parse(r#"auth = { type = "basic" }"#).unwrap(),
        Scheme::Basic
    );
    assert_eq!(parse(r#"auth = { type = "none" }"#).unwrap(), Scheme::None);
    assert!(
        parse(r#"auth = { type = "api-key" }"#).is_err(),
        "header is required"
    );
    assert!(
        parse(r#"auth = { type = "standard-webhooks", tolerance = 60 }"#).is_err(),
        "unknown field"
    );
    assert!(parse(r#"auth = { type = "magic" }"#).is_err());
}

fn arb_scheme() -> impl Strategy<Value = (Scheme, String)> {
    prop_oneof![
        "[ -~]{1,40}".prop_map(|s| (Scheme::HubSignature256, s)),
        (prop::collection::vec(any::<u8>(), 24..=64), 0u64..1000).prop_map(|(k, t)| (
            Scheme::StandardWebhooks { tolerance_secs: t },
            encode_whsec(&k)
        )),
        ("[!-~]{0,8}", any::<bool>(), "[ -~]{1,40}").prop_map(|(prefix, hex, s)| (
            Scheme::HmacHeader {
                header: "X-Sig".into(),
                prefix,
                encoding: if hex { Encoding::Hex } else { Encoding::Base64 },
            },
            s
        )),
        "[!-~]([ -~]{0,30}[!-~])?".prop_map(|s| (
            Scheme::ApiKey {
                header: "X-Key".into()
            },
            s
        )),
        ("[ -~]{0,10}", "[ -~]{0,10}").prop_map(|(u, p)| (Scheme::Basic, format!("{u}:{p}"))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sign_then_verify_round_trips(
        (scheme, secret) in arb_scheme(),
        body in prop::collection::vec(any::<u8>(), 0..256),
        id in "[A-Za-z0-9_-]{1,32}",
        now in 0i64..4_000_000_000,
        flip in any::<prop::sample::Index>(),
        decoy_bytes in prop::collection::vec(any::<u8>(), 24..=64),
    ) {
        let headers = sign(&scheme, &secret, &body, &id, now).unwrap();
        // A decoy secret first: rotation order must not matter. It is valid for every scheme.
        let decoy = match scheme {
            Scheme::StandardWebhooks { .. } => encode_whsec(&decoy_bytes),
            Scheme::Basic => "decoy:decoy-password".to_owned(),
            _ => hex::encode(&decoy_bytes),
        };
        let v = Verifier::new(scheme.clone(), vec![decoy, secret.clone()]).unwrap();
        let ok = v.verify(&headers, &body, now).unwrap();
        let signs_id = matches!(scheme, Scheme::StandardWebhooks { .. });
        prop_assert_eq!(ok.delivery_id.as_deref(), signs_id.then_some(id.as_str()));

        // Tampering with any body byte breaks every MAC scheme.
        let has_mac = !matches!(scheme, Scheme::ApiKey { .. } | Scheme::Basic | Scheme::None);
        let mut tampered = body.clone();
        if tampered.is_empty() {
            tampered.push(0);
        } else {
            let i = flip.index(tampered.len());
            tampered[i] ^= 1;
        }
        let result = v.verify(&headers, &tampered, now);
        if has_mac {
            prop_assert_eq!(result, Err(VerifyError::SignatureMismatch));
        } else {
            prop_assert!(result.is_ok(), "credential schemes do not cover the body");
        }
    }

    #[test]
    fn verify_never_panics_on_arbitrary_headers(
        (scheme, secret) in arb_scheme(),
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 4),
        body in prop::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
    ) {
        let v = Verifier::new(scheme, vec![secret]).unwrap();
        let names = ["webhook-id", "webhook-timestamp", "webhook-signature", "authorization"];
        let mut headers: Vec<(String, Vec<u8>)> =
            names.iter().map(|n| n.to_string()).zip(values).collect();
        headers.push(("x-sig".into(), headers[2].1.clone()));
        headers.push(("x-key".into(), headers[0].1.clone()));
        headers.push(("x-hub-signature-256".into(), headers[2].1.clone()));
        let _ = v.verify(&headers, &body, now);
    }
}
