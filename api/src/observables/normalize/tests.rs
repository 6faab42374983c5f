use super::*;
use ObservableType::*;

fn ok(kind: ObservableType, value: &str) -> String {
    kind.normalize(value)
        .unwrap_or_else(|e| panic!("{kind} {value:?} refused: {e}"))
}

/// Refused, and the refusal names the type and the value.
fn refused(kind: ObservableType, value: &str) -> String {
    let err = kind
        .normalize(value)
        .expect_err(&format!("{kind} {value:?} accepted"));
    let text = err.to_string();
    assert!(text.starts_with(kind.as_str()), "{text}");
    let shown = format!("{:?}", value.chars().take(200).collect::<String>());
    assert!(text.contains(&shown), "{text}");
    text
}

#[test]
fn addresses_come_out_in_their_standard_form() {
    assert_eq!(ok(Ipv4, " 192.0.2.7 "), "192.0.2.7");
    refused(Ipv4, "192.0.2");
    refused(Ipv4, "192.0.2.256");
    refused(Ipv4, "010.0.0.1");
    refused(Ipv4, "2001:db8::1");
    assert_eq!(ok(Ipv6, "2001:DB8:0:0:0:0:0:7"), "2001:db8::7");
    assert_eq!(ok(Ipv6, "[::1]"), "::1");
    assert!(refused(Ipv6, "::ffff:192.0.2.7").contains("ipv4 192.0.2.7"));
    refused(Ipv6, "fe80::1%eth0");
    refused(Ipv6, "192.0.2.7");
}

#[test]
fn blocks_need_clear_host_bits_and_always_show_their_prefix() {
    assert_eq!(ok(Cidr, "10.0.0.0/8"), "10.0.0.0/8");
    assert_eq!(ok(Cidr, "192.0.2.7"), "192.0.2.7/32");
    assert_eq!(ok(Cidr, "2001:db8::/32"), "2001:db8::/32");
    assert_eq!(ok(Cidr, "::1"), "::1/128");
    assert!(refused(Cidr, "10.0.0.1/8").contains("host bits"));
    refused(Cidr, "10.0.0.0/33");
    refused(Cidr, "10.0.0.0/");
}

#[test]
fn names_are_lowercase_ascii_without_the_trailing_dot() {
    assert_eq!(ok(Domain, "Evil.Example.ORG."), "evil.example.org");
    assert_eq!(ok(Domain, "bücher.example"), "xn--bcher-kva.example");
    assert_eq!(ok(Domain, "_dmarc.example.org"), "_dmarc.example.org");
    assert!(refused(Domain, "localhost").contains("two labels"));
    assert!(refused(Domain, "192.0.2.7").contains("ipv4"));
    refused(Domain, "-bad.example.org");
    refused(Domain, "a..example.org");
    refused(Domain, "has space.example.org");
    refused(Domain, &format!("{}.org", "a".repeat(64)));
    assert_eq!(ok(Hostname, "WEB-01"), "web-01");
    assert_eq!(ok(Hostname, "web-01.corp.example."), "web-01.corp.example");
    refused(Hostname, "web 01");
}

#[test]
fn urls_are_parsed_and_written_back() {
    assert_eq!(
        ok(Url, "HTTPS://Evil.Example.org:443/a b?x=1"),
        "https://evil.example.org/a%20b?x=1"
    );
    assert_eq!(ok(Url, "http://192.0.2.7:8080/"), "http://192.0.2.7:8080/");
    refused(Url, "evil.example.org/x");
    assert_eq!(
        ok(Url, "https://user:secret@evil.example.org/x"),
        "https://evil.example.org/x",
        "credentials are dropped"
    );
    refused(Url, "mailto:someone@example.org");
    refused(Url, "http://");
}

#[test]
fn hashes_are_lowercase_hex_of_their_length() {
    let sha256 = "AB".repeat(32);
    assert_eq!(ok(Sha256, &sha256), "ab".repeat(32));
    assert_eq!(ok(Sha1, &"0f".repeat(20)), "0f".repeat(20));
    assert_eq!(ok(Md5, &"9".repeat(32)), "9".repeat(32));
    assert!(refused(Sha256, &"ab".repeat(31)).contains("64 hex digits"));
    refused(Sha1, &"ab".repeat(32));
    refused(Md5, &"zz".repeat(16));
}

#[test]
fn emails_ports_and_the_rest() {
    assert_eq!(ok(Email, "Alice@Example.ORG"), "Alice@example.org");
    refused(Email, "alice");
    refused(Email, "@example.org");
    refused(Email, "a b@example.org");
    refused(Email, "alice@localhost");
    assert_eq!(ok(Port, "0443"), "443");
    refused(Port, "0");
    refused(Port, "65536");
    refused(Port, "http");
    assert_eq!(ok(FilePath, "/tmp/x.sh"), "/tmp/x.sh");
    assert_eq!(ok(FilePath, "C:\\Users\\x.exe"), "C:\\Users\\x.exe");
    assert_eq!(ok(FilePath, "\\\\server\\share\\x"), "\\\\server\\share\\x");
    refused(FilePath, "tmp/x.sh");
    refused(FilePath, "/");
    refused(FilePath, "C:\\");
    refused(FilePath, "/tmp/dir/");
    refused(FilePath, "/tmp/a\u{1b}[31m");
    assert_eq!(ok(FileName, "x.sh"), "x.sh");
    assert!(refused(FileName, "/tmp/x.sh").contains("file_path"));
    refused(FileName, "..");
    assert_eq!(ok(ProcessName, " sshd "), "sshd");
    refused(ProcessName, &"a".repeat(257));
    assert_eq!(ok(CommandLine, "sh -c\t'id'"), "sh -c\t'id'");
    refused(CommandLine, "sh\n-c");
    assert_eq!(ok(User, "root"), "root");
    refused(User, "ro\u{7}ot");
}

#[test]
fn every_type_refuses_empty_nul_and_oversized_values() {
    use strum::VariantArray;
    for kind in ObservableType::VARIANTS {
        assert!(refused(*kind, "  ").contains("empty"));
        refused(*kind, "a\0b");
        assert!(refused(*kind, &"a".repeat(MAX_VALUE_BYTES + 1)).contains("longer"));
        // Names parse back.
        assert_eq!(kind.as_str().parse::<ObservableType>().ok(), Some(*kind));
    }
}
