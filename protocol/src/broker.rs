//! Where an MQTT broker is: `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (TLS), the port 1883 or
//! 8883 when left out, an IPv6 host in brackets. One parser for the server's `mqtt.url` and the
//! broker URL a device is given at enrollment, so both read the same URL the same way.

use crate::Error;

/// A broker's host, port and whether to speak TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// A name or an IP address (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddress {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let shown: String = url.chars().take(200).collect();
        let bad = |detail: &str| Error::invalid("broker URL", format!("{shown:?}: {detail}"));
        let (tls, rest) = match (url.strip_prefix("mqtts://"), url.strip_prefix("mqtt://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(bad("must start with mqtt:// or mqtts://")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['@', '/', '?', '#']) {
            return Err(bad(
                "expected mqtt[s]://HOST[:PORT] (no user, path or query)",
            ));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 host needs its closing ]"))?;
                match after {
                    "" => (host, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Err(bad("expected :PORT after the IPv6 host")),
                    },
                }
            }
            None => match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#' | '[' | ']'))
        {
            return Err(bad(
                "expected mqtt[s]://HOST[:PORT] (no user, path or query)",
            ));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(port) => match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("the port is not a number 1-65535")),
                Ok(port) => port,
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// The address as a URL [`BrokerAddress::parse`] reads back to it.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, u16, bool) {
        let b = BrokerAddress::parse(url).unwrap();
        (b.host, b.port, b.tls)
    }

    #[test]
    fn hosts_ports_and_tls_with_the_default_ports() {
        assert_eq!(
            ok("mqtt://127.0.0.1:1884"),
            ("127.0.0.1".into(), 1884, false)
        );
        assert_eq!(
            ok("mqtts://broker.example:8884/"),
            ("broker.example".into(), 8884, true)
        );
        assert_eq!(ok("mqtt://broker"), ("broker".into(), 1883, false));
        assert_eq!(ok("mqtts://broker"), ("broker".into(), 8883, true));
        assert_eq!(ok("mqtt://[::1]:1885"), ("::1".into(), 1885, false));
        assert_eq!(ok("mqtts://[fd00::2]"), ("fd00::2".into(), 8883, true));
    }

    proptest::proptest! {
        #[test]
        fn what_parses_reads_back_the_same_from_its_url(url in "mqtts?://(\\[[0-9a-f:]{0,12}\\]|[a-z0-9.:-]{0,12})(:[0-9]{0,6})?/?") {
            if let Ok(broker) = BrokerAddress::parse(&url) {
                proptest::prop_assert_eq!(BrokerAddress::parse(&broker.url()).ok(), Some(broker));
            }
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for (url, why) in [
            ("tcp://h:1", "mqtt://"),
            ("mqtt://", "HOST"),
            ("mqtt://h:x", "port"),
            ("mqtt://h:0", "port"),
            ("mqtt://h:70000", "port"),
            ("mqtt://user:pw@h:1883", "no user"),
            ("mqtt://h:1883/path", "no user, path"),
            ("mqtt://h/path", "no user, path"),
            ("mqtt://[::1", "closing ]"),
            ("mqtt://[::1]x", ":PORT"),
            ("mqtt://::1", "HOST"),
        ] {
            let e = BrokerAddress::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
