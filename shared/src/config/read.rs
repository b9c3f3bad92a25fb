//! Typed readers over a [`Vars`] source and the value parsers both programs share: durations,
//! booleans, comma lists, `ip:port` lists, CIDRs, host names and `host:port` pairs. Every error
//! names the variable, so a bad value stops the program at start with a message an operator can
//! act on.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::{ConfigError, Vars, err};

/// Typed access to one source of variables; empty values count as unset.
pub struct Reader<'a>(pub &'a dyn Vars);

impl Reader<'_> {
    /// The trimmed value, `None` when unset or empty.
    pub fn opt(&self, var: &'static str) -> Option<String> {
        self.0.var(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.opt(var).ok_or_else(|| err(var, "must be set"))
    }

    /// Any `FromStr` value, `default` when unset.
    pub fn parse<T: std::str::FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.opt(var) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| err(var, format!("cannot parse {v:?}: {e}"))),
        }
    }

    pub fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.opt(var).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(err(var, format!("expected true or false, got {v:?}"))),
        }
    }

    /// A humantime duration (`default` when unset).
    pub fn duration(&self, var: &'static str, default: &str) -> Result<Duration, ConfigError> {
        let v = self.opt(var).unwrap_or_else(|| default.to_string());
        parse_duration(&v).map_err(|e| err(var, e))
    }

    /// A comma-separated list, items trimmed, empty items dropped.
    pub fn list(&self, var: &'static str) -> Vec<String> {
        self.opt(var)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// A comma list of `ip:port`; `default` when unset.
    pub fn addrs(&self, var: &'static str, default: Option<&str>) -> Result<Vec<SocketAddr>, ConfigError> {
        let items = match (self.list(var), default) {
            (l, Some(d)) if l.is_empty() => vec![d.to_string()],
            (l, _) => l,
        };
        items
            .iter()
            .map(|a| a.parse::<SocketAddr>().map_err(|e| err(var, format!("{a:?} is not ip:port: {e}"))))
            .collect()
    }

    /// A comma list of CIDRs (a bare address is a /32 or /128).
    pub fn networks(&self, var: &'static str) -> Result<Vec<IpNet>, ConfigError> {
        self.list(var)
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|e| err(var, format!("{n:?} is not a CIDR: {e}")))
            })
            .collect()
    }

    /// A path that must name a readable file.
    pub fn path(&self, var: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        match self.opt(var) {
            None => Ok(None),
            Some(p) if std::path::Path::new(&p).is_file() => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(err(var, format!("{p} is not a readable file"))),
        }
    }

    /// A host name: the value, or the system's host name when unset; checked either way.
    pub fn hostname(&self, var: &'static str) -> Result<String, ConfigError> {
        let name = self.opt(var).unwrap_or_else(system_hostname);
        if valid_hostname(&name) { Ok(name) } else { Err(err(var, format!("{name:?} is not a valid host name"))) }
    }

    /// A value from a fixed set of names, `default` when unset.
    pub fn choice<T: Copy>(&self, var: &'static str, default: T, names: &[(&str, T)]) -> Result<T, ConfigError> {
        let Some(v) = self.opt(var) else { return Ok(default) };
        names.iter().find(|(n, _)| n.eq_ignore_ascii_case(&v)).map(|(_, t)| *t).ok_or_else(|| {
            let expected: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            err(var, format!("expected {}, got {v:?}", expected.join(" or ")))
        })
    }
}

/// Parse a humantime duration; a bare `0` is zero.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    if v.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?} is not a duration like 90s, 5m, 4h or 5d: {e}"))
}

/// `host:port` (`[v6]:port` for IPv6 literals), with a non-empty host.
pub fn parse_host_port(v: &str) -> Result<(String, u16), String> {
    v.rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| format!("{v:?} is not host:port"))
}

/// Dot-separated labels of letters, digits and hyphens, 253 characters at most.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

fn system_hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn reader_test(pairs: &[(&str, &str)], f: impl FnOnce(&Reader)) {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        f(&Reader(&m));
    }

    #[test]
    fn shared_parsers() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
        assert_eq!(parse_host_port("[::1]:25"), Ok(("::1".to_string(), 25)));
        assert_eq!(parse_host_port("mx.example.org:2525"), Ok(("mx.example.org".to_string(), 2525)));
        for bad in ["nohostport", ":25", "h:70000", "h:"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
        assert!(valid_hostname("mx-1.example.org") && !valid_hostname("bad host") && !valid_hostname("a..b"));
    }

    #[test]
    fn readers_name_the_variable() {
        reader_test(&[("A", " x , ,y "), ("N", "10.0.0.0/8,192.0.2.7"), ("B", "maybe"), ("C", "Two")], |r| {
            assert_eq!(r.list("A"), ["x", "y"]);
            assert_eq!(r.networks("N").unwrap().len(), 2);
            assert_eq!(r.bool("B", false).unwrap_err().var, "B");
            assert_eq!(r.choice("C", 0, &[("one", 1), ("two", 2)]), Ok(2));
            assert_eq!(r.choice("UNSET", 0, &[("one", 1)]), Ok(0));
            let e = r.choice("A", 0, &[("one", 1), ("two", 2)]).unwrap_err();
            assert_eq!(e.to_string(), "A: expected one or two, got \"x , ,y\"");
        });
    }
}
