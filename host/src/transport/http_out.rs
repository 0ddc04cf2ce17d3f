//! `transport.http.outbound`: `http_fetch` with the egress policy of docs/capabilities.md.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use pulp_ext_api::{Capability, CellState, Code, HostImport, SetupEnv};
use pulp_wire::payload::{FetchRequest, FetchResponse};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::Shared;

pub const NAME: &str = "transport.http.outbound";

/// Addresses a cell may not reach unless its allowlist names them: loopback,
/// private, link-local (which holds the cloud metadata address), unspecified,
/// multicast and the like.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        }
        IpAddr::V6(v6) => {
            // Forms that carry an IPv4 address a gateway or the kernel may
            // dial: judged by that address.
            if let Some(v4) = embedded_ipv4(v6) {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0) // Teredo: the IPv4 inside is obfuscated
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible
        }
    }
}

/// The IPv4 address inside an IPv6 one, for the forms that route to it:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`),
/// NAT64 (`64:ff9b::/96` and the local-use `64:ff9b:1::/48`) and 6to4
/// (`2002:AABB:CCDD::/16`).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let last = std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return Some(last);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return Some(last);
    }
    if s[0] == 0x2002 {
        return Some(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Resolves names and drops internal addresses, so what is checked is what is dialled.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves only to internal addresses").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct Fetcher {
    /// For cells without an allowlist: internal addresses refused at connect time.
    public: reqwest::Client,
    /// For cells with an allowlist: it names exactly what may be reached.
    listed: reqwest::Client,
}

impl Fetcher {
    pub fn new() -> Result<Fetcher, String> {
        let build = |public: bool| {
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy();
            if public {
                builder = builder.dns_resolver(Arc::new(PublicOnly));
            }
            builder
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        Ok(Fetcher {
            public: build(true)?,
            listed: build(false)?,
        })
    }
}

/// One `allowed_outbound_hosts` entry: `https://api.example.com`,
/// `http://127.0.0.1:8080`, `*.example.com`, or a bare host.
fn allowed_by(entry: &str, url: &reqwest::Url) -> bool {
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, entry),
    };
    let rest = rest.trim_end_matches('/');
    let (host_pattern, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => (rest, None),
        },
        _ => (rest, None),
    };
    if scheme.is_some_and(|s| !s.eq_ignore_ascii_case(url.scheme())) {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let pattern = host_pattern
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let host_ok = match pattern.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => host == pattern,
    };
    // Without a port in the entry, a scheme pins its default port.
    let port_ok = match (port, scheme) {
        (Some(p), _) => url.port_or_known_default() == Some(p),
        (None, Some(_)) => url.port().is_none(),
        (None, None) => true,
    };
    host_ok && port_ok
}

pub struct HttpOutbound(pub Arc<Shared>);

impl Capability for HttpOutbound {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        crate::builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        let shared = Arc::clone(&self.0);
        vec![HostImport::request_output(
            "http_fetch",
            move |guest, req: FetchRequest<'static>| {
                let cell = guest.cell().to_owned();
                let limits = guest.state::<super::CellLimits>()?;
                let response = fetch(&shared, &cell, limits, req)?;
                rmp_serde::to_vec_named(&response).map_err(|_| Code::FAILED)
            },
        )]
    }

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        for entry in &env.allowed_outbound_hosts {
            if entry.trim().is_empty() {
                return Err("allowed_outbound_hosts has an empty entry".into());
            }
        }
        Ok(CellState::new(super::CellLimits::of(env)))
    }
}

fn fetch(
    shared: &Shared,
    cell: &str,
    limits: &super::CellLimits,
    req: FetchRequest<'_>,
) -> Result<FetchResponse, Code> {
    let url = reqwest::Url::parse(&req.url).map_err(|_| Code::DECODE)?;
    if !matches!(url.scheme(), "http" | "https") {
        tracing::warn!(cell, url = %url, "fetch refused: only http and https");
        return Err(Code::REFUSED);
    }
    let listed = !limits.allowed_outbound_hosts.is_empty();
    if listed
        && !limits
            .allowed_outbound_hosts
            .iter()
            .any(|e| allowed_by(e, &url))
    {
        tracing::warn!(
            cell,
            host = url.host_str().unwrap_or(""),
            "fetch refused: host not in allowed_outbound_hosts"
        );
        return Err(Code::REFUSED);
    }
    let max = limits.max_message_bytes as usize;
    let timeout = req
        .timeout_ns
        .map(Duration::from_nanos)
        .unwrap_or(limits.call_timeout)
        .min(limits.call_timeout);
    let method = match &*req.method {
        "" => "GET".to_owned(),
        method => method.to_ascii_uppercase(),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| Code::DECODE)?;
    let client = if listed {
        &shared.fetch.listed
    } else {
        &shared.fetch.public
    };

    // Refused before dialling: a literal internal address, or a name that resolves
    // to one. The resolver checks again at connect time, so a name that changes its
    // answer in between gets no further.
    if !listed {
        let host = url
            .host_str()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let internal = shared.runtime.block_on(async {
            match host.parse::<IpAddr>() {
                Ok(ip) => Ok(is_internal(ip)),
                Err(_) => tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(|mut addrs| addrs.any(|a| is_internal(a.ip()))),
            }
        });
        match internal {
            Ok(true) => {
                tracing::warn!(
                    cell,
                    host = host.as_str(),
                    "fetch refused: internal address (loopback, private, link-local or metadata)"
                );
                return Err(Code::REFUSED);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(
                    cell,
                    host = host.as_str(),
                    "fetch failed: cannot resolve: {e}"
                );
                return Err(Code::FAILED);
            }
        }
    }

    let mut request = client
        .request(method, url.clone())
        .timeout(timeout)
        .body(req.body.into_owned().into_vec());
    for (name, value) in &req.headers {
        request = request.header(&**name, &**value);
    }
    let fetched = async move {
        let mut response = request.send().await.map_err(|e| {
            tracing::warn!(cell, url = %url, "fetch failed: {e}");
            Code::FAILED
        })?;
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            tracing::warn!(cell, url = %url, "fetch response over max_message_bytes");
            return Err(Code::TOO_LARGE);
        }
        let status = response.status().as_u16();
        let headers = super::joined_headers(response.headers())
            .map(|(name, value)| (name.to_owned(), value.into_owned()))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            tracing::warn!(cell, url = %url, "fetch failed reading the body: {e}");
            Code::FAILED
        })? {
            if body.len() + chunk.len() > max {
                tracing::warn!(cell, url = %url, "fetch response over max_message_bytes");
                return Err(Code::TOO_LARGE);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchResponse {
            status,
            headers,
            body,
        })
    };
    // Bounded by the timeout above, and cut short by host shutdown.
    shared.runtime.block_on(async {
        tokio::select! {
            result = fetched => result,
            () = crate::runtime::stop::interrupted() => {
                tracing::warn!(cell, "fetch interrupted by host shutdown");
                Err(Code::FAILED)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> reqwest::Url {
        reqwest::Url::parse(u).unwrap()
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::c0a8:101",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn allowlist_entries() {
        assert!(allowed_by(
            "https://api.example.com",
            &url("https://api.example.com/x")
        ));
        assert!(!allowed_by(
            "https://api.example.com",
            &url("http://api.example.com/x")
        ));
        assert!(!allowed_by(
            "https://api.example.com",
            &url("https://api.example.com:8443/x")
        ));
        assert!(allowed_by(
            "http://127.0.0.1:8080",
            &url("http://127.0.0.1:8080/")
        ));
        assert!(!allowed_by(
            "http://127.0.0.1:8080",
            &url("http://127.0.0.1:9090/")
        ));
        assert!(allowed_by(
            "*.example.com",
            &url("https://a.b.example.com/")
        ));
        assert!(!allowed_by("*.example.com", &url("https://example.com/")));
        assert!(!allowed_by(
            "*.example.com",
            &url("https://evilexample.com/")
        ));
        assert!(allowed_by("example.com", &url("http://example.com:1234/")));
    }
}
