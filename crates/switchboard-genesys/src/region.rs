//! The 18 Genesys Cloud regions and how their hosts are derived.

use std::fmt;

use crate::error::Error;

/// One Genesys Cloud region, named as the official SDKs name it (`PureCloudRegionHosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    name: &'static str,
    domain: &'static str,
}

/// SDK name and bare domain of every region. The API host is `api.<domain>`, the login host
/// `login.<domain>`; the SDKs derive one from the other the same way.
const REGIONS: &[(&str, &str)] = &[
    ("us_east_1", "mypurecloud.com"),
    ("us_east_2", "use2.us-gov-pure.cloud"),
    ("us_west_2", "usw2.pure.cloud"),
    ("ca_central_1", "cac1.pure.cloud"),
    ("sa_east_1", "sae1.pure.cloud"),
    ("mx_central_1", "mxc1.pure.cloud"),
    ("eu_west_1", "mypurecloud.ie"),
    ("eu_west_2", "euw2.pure.cloud"),
    ("eu_central_1", "mypurecloud.de"),
    ("eu_central_2", "euc2.pure.cloud"),
    ("eusc_de_east_1", "edee1.eusc-pure.cloud"),
    ("me_central_1", "mec1.pure.cloud"),
    ("ap_south_1", "aps1.pure.cloud"),
    ("ap_southeast_1", "apse1.pure.cloud"),
    ("ap_southeast_2", "mypurecloud.com.au"),
    ("ap_northeast_1", "mypurecloud.jp"),
    ("ap_northeast_2", "apne2.pure.cloud"),
    ("ap_northeast_3", "apne3.pure.cloud"),
];

impl Region {
    /// Every region, in the SDK's order.
    pub fn all() -> impl Iterator<Item = Region> {
        REGIONS
            .iter()
            .map(|&(name, domain)| Region { name, domain })
    }

    /// Looks a region up by SDK name (`eu_west_1`, also `eu-west-1`), by bare domain
    /// (`mypurecloud.ie`) or by API/login host (`api.mypurecloud.ie`). Case-insensitive.
    pub fn parse(input: &str) -> Result<Region, Error> {
        let s = input.trim().trim_end_matches('/').to_ascii_lowercase();
        let s = s.strip_prefix("https://").unwrap_or(&s);
        let host = s
            .strip_prefix("api.")
            .or_else(|| s.strip_prefix("login."))
            .unwrap_or(s);
        let name = host.replace('-', "_");
        Region::all()
            .find(|r| r.name == name || r.domain == host)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown Genesys region {input:?}; use an SDK name such as eu_west_1 or a domain such as mypurecloud.ie"
                ))
            })
    }

    /// SDK-style name, for example `eu_west_1`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Bare domain, for example `mypurecloud.ie`.
    pub fn domain(&self) -> &'static str {
        self.domain
    }

    /// `https://api.<domain>`.
    pub fn api_base_url(&self) -> String {
        format!("https://api.{}", self.domain)
    }

    /// `https://login.<domain>`.
    pub fn login_base_url(&self) -> String {
        format!("https://login.{}", self.domain)
    }

    /// `streaming.<domain>`, for display only: WebSockets always use the returned `connectUri`.
    pub fn streaming_host(&self) -> String {
        format!("streaming.{}", self.domain)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<(&str, &str, &str)>) {
        let got = Region::parse(input)
            .ok()
            .map(|r| (r.name(), r.api_base_url(), r.login_base_url()));
        let expected = expected.map(|(n, a, l)| (n, a.to_string(), l.to_string()));
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn parses_names_domains_and_hosts() {
        let ie = Some((
            "eu_west_1",
            "https://api.mypurecloud.ie",
            "https://login.mypurecloud.ie",
        ));
        check("eu_west_1", ie);
        check("EU-WEST-1", ie);
        check("mypurecloud.ie", ie);
        check("api.mypurecloud.ie", ie);
        check("https://login.mypurecloud.ie/", ie);
        check(
            "us_east_2",
            Some((
                "us_east_2",
                "https://api.use2.us-gov-pure.cloud",
                "https://login.use2.us-gov-pure.cloud",
            )),
        );
        check(
            "mypurecloud.com.au",
            Some((
                "ap_southeast_2",
                "https://api.mypurecloud.com.au",
                "https://login.mypurecloud.com.au",
            )),
        );
        check(
            "usw2.pure.cloud",
            Some((
                "us_west_2",
                "https://api.usw2.pure.cloud",
                "https://login.usw2.pure.cloud",
            )),
        );
        check(
            "eusc_de_east_1",
            Some((
                "eusc_de_east_1",
                "https://api.edee1.eusc-pure.cloud",
                "https://login.edee1.eusc-pure.cloud",
            )),
        );
        check("mypurecloud.co", None);
        check("", None);
        check("eu_west_9", None);
    }

    #[test]
    fn eighteen_distinct_regions() {
        let names: std::collections::BTreeSet<_> = Region::all().map(|r| r.name()).collect();
        let domains: std::collections::BTreeSet<_> = Region::all().map(|r| r.domain()).collect();
        assert_eq!(names.len(), 18);
        assert_eq!(domains.len(), 18);
        for r in Region::all() {
            assert_eq!(Region::parse(r.domain()).unwrap(), r);
            assert_eq!(Region::parse(r.name()).unwrap(), r);
        }
    }
}
