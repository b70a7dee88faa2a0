//! Seeded generator of the devops `cpu` line shape used by influxdb-comparisons and
//! tsbs: measurement `cpu` (plus `cpu_1`, `cpu_2`, ... for `--measurements`), ten
//! host tags and ten float fields, about 386 bytes a line.
//!
//! The output is a pure function of the seed and the line index: line `l` belongs to
//! series `l % series_count` (host-major, then measurement) and to timestamp row
//! `l / series_count`, so every series gets one point per row and rows step forward
//! by [`STEP_NS`]. That makes any slice of the stream reproducible on its own, which
//! lets bodies be built in parallel and lets a body be re-sent with shifted
//! timestamps (`round_rows`) without touching its tags or field values.
//!
//! Field values are drawn independently per line rather than as tsbs's random walk:
//! the bytes on the wire have the same shape and length, and independence keeps
//! line `l` computable without lines `0..l`.
//!
//! Source of the shape: tsbs `pkg/data/usecases/devops/host.go` and `cpu.go`.

/// Regions and their datacenters, as in tsbs `devops/host.go`.
const REGIONS: [(&str, &[&str]); 9] = [
    (
        "us-east-1",
        &["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"],
    ),
    ("us-west-1", &["us-west-1a", "us-west-1b"]),
    ("us-west-2", &["us-west-2a", "us-west-2b", "us-west-2c"]),
    ("eu-west-1", &["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
    ("eu-central-1", &["eu-central-1a", "eu-central-1b"]),
    ("ap-southeast-1", &["ap-southeast-1a", "ap-southeast-1b"]),
    ("ap-southeast-2", &["ap-southeast-2a", "ap-southeast-2b"]),
    ("ap-northeast-1", &["ap-northeast-1a", "ap-northeast-1c"]),
    ("sa-east-1", &["sa-east-1a", "sa-east-1b", "sa-east-1c"]),
];
const OSES: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
const ARCHES: [&str; 2] = ["x64", "x86"];
const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENVIRONMENTS: [&str; 3] = ["production", "staging", "test"];
const RACKS: u64 = 100;
const SERVICES: u64 = 20;
const SERVICE_VERSIONS: u64 = 2;

/// Field keys of the tsbs `cpu` measurement, in its order.
pub const FIELD_KEYS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

/// Digits after the decimal point of each field value (0.0000 to 99.9999). Four
/// brings the average line to the ~386 bytes quoted for the tsbs cpu shape.
const FIELD_DECIMALS: u32 = 4;
const FIELD_SCALE: u64 = 10u64.pow(FIELD_DECIMALS);
/// Field values lie in `[0, 100)`, like CPU percentages.
const FIELD_RANGE: u64 = 100 * FIELD_SCALE;

/// First timestamp: 2016-01-01T00:00:00Z, tsbs's default start.
pub const START_NS: u64 = 1_451_606_400_000_000_000;
/// Time between rows. One second rather than tsbs's 10 s keeps a long run within few
/// 7-day shard groups, so the server is not measured on shard creation.
pub const STEP_NS: u64 = 1_000_000_000;

/// Odd constants that keep the per-host and per-line random streams apart.
const HOST_STREAM: u64 = 0x6A09_E667_F3BC_C908;
const LINE_STREAM: u64 = 0xBB67_AE85_84CA_A73B;

/// Nanoseconds in one unit of an InfluxDB 1.x `precision` value, or `None` if the
/// value is not one InfluxDB accepts.
pub fn ns_per_unit(precision: &str) -> Option<u64> {
    Some(match precision {
        "n" | "ns" => 1,
        "u" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// What to generate: everything that decides the bytes.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub hosts: u64,
    pub measurements: u64,
    pub seed: u64,
    /// Nanoseconds per timestamp unit, from [`ns_per_unit`].
    pub ns_per_unit: u64,
    /// Tags sorted by key (as Telegraf and the client libraries write them)
    /// instead of in the devops data set's order.
    pub sorted_tags: bool,
}

/// Pre-rendered series keys plus the timestamp arithmetic.
pub struct Generator {
    /// `measurement,tag=value,... ` (with the trailing space) for each series, in
    /// emit order: host-major, then measurement.
    series: Vec<Vec<u8>>,
    seed: u64,
    start_units: u64,
    /// At least one precision unit, so coarse precisions still give distinct times.
    step_units: u64,
}

impl Generator {
    pub fn new(shape: Shape) -> Generator {
        let mut series = Vec::with_capacity((shape.hosts * shape.measurements) as usize);
        for host in 0..shape.hosts {
            let tags = host_tags(shape.seed, host, shape.sorted_tags);
            for m in 0..shape.measurements {
                let mut key = if m == 0 {
                    b"cpu".to_vec()
                } else {
                    format!("cpu_{m}").into_bytes()
                };
                key.extend_from_slice(tags.as_bytes());
                key.push(b' ');
                series.push(key);
            }
        }
        Generator {
            series,
            seed: shape.seed,
            start_units: START_NS / shape.ns_per_unit,
            step_units: (STEP_NS / shape.ns_per_unit).max(1),
        }
    }

    /// Number of distinct series: one point each per timestamp row.
    pub fn series_count(&self) -> u64 {
        self.series.len() as u64
    }

    /// Timestamp of line `line`, moved `round_rows` rows later.
    pub fn timestamp(&self, line: u64, round_rows: u64) -> u64 {
        let row = line / self.series_count() + round_rows;
        self.start_units + row * self.step_units
    }

    /// Appends lines `first_line..first_line + count` to `out`, each ending in `\n`,
    /// and pushes the offset in `out` of each line's timestamp to `ts_offsets`.
    pub fn write_lines(
        &self,
        first_line: u64,
        count: usize,
        round_rows: u64,
        out: &mut Vec<u8>,
        ts_offsets: &mut Vec<usize>,
    ) {
        for line in first_line..first_line + count as u64 {
            out.extend_from_slice(&self.series[(line % self.series_count()) as usize]);
            let mut rng = Rng::new(self.seed ^ LINE_STREAM, line);
            for (i, key) in FIELD_KEYS.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key.as_bytes());
                out.push(b'=');
                let value = rng.below(FIELD_RANGE);
                push_decimal(out, value / FIELD_SCALE);
                out.push(b'.');
                push_padded(out, value % FIELD_SCALE, FIELD_DECIMALS as usize);
            }
            out.push(b' ');
            ts_offsets.push(out.len());
            push_decimal(out, self.timestamp(line, round_rows));
            out.push(b'\n');
        }
    }
}

/// The `,hostname=...,service_environment=...` tag string of one host, its
/// tags in the data set's order or sorted by key.
fn host_tags(seed: u64, host: u64, sorted: bool) -> String {
    let mut rng = Rng::new(seed ^ HOST_STREAM, host);
    let (region, datacenters) = REGIONS[rng.below(REGIONS.len() as u64) as usize];
    let datacenter = datacenters[rng.below(datacenters.len() as u64) as usize];
    let rack = rng.below(RACKS);
    let os = OSES[rng.below(OSES.len() as u64) as usize];
    let arch = ARCHES[rng.below(ARCHES.len() as u64) as usize];
    let team = TEAMS[rng.below(TEAMS.len() as u64) as usize];
    let service = rng.below(SERVICES);
    let version = rng.below(SERVICE_VERSIONS);
    let environment = ENVIRONMENTS[rng.below(ENVIRONMENTS.len() as u64) as usize];
    let mut tags = [
        ("hostname", format!("host_{host}")),
        ("region", region.to_owned()),
        ("datacenter", datacenter.to_owned()),
        ("rack", rack.to_string()),
        ("os", os.to_owned()),
        ("arch", arch.to_owned()),
        ("team", team.to_owned()),
        ("service", service.to_string()),
        ("service_version", version.to_string()),
        ("service_environment", environment.to_owned()),
    ];
    if sorted {
        tags.sort_unstable_by_key(|&(key, _)| key);
    }
    tags.iter()
        .map(|(key, value)| format!(",{key}={value}"))
        .collect()
}

/// Appends `value` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let start = format_decimal(value, &mut digits);
    out.extend_from_slice(&digits[start..]);
}

/// Writes `value` right-aligned into `digits`; returns where the digits start.
pub fn format_decimal(mut value: u64, digits: &mut [u8; 20]) -> usize {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return i;
        }
    }
}

/// Appends `value` zero-padded to `width` digits.
fn push_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let start = format_decimal(value, &mut digits);
    out.resize(out.len() + width.saturating_sub(digits.len() - start), b'0');
    out.extend_from_slice(&digits[start..]);
}

/// splitmix64: tiny, seedable and good enough for test data; no `rand` dependency.
/// Also the sink's failure-injection dice.
pub struct Rng(u64);

impl Rng {
    /// One independent stream per (`seed`, `index`).
    pub fn new(seed: u64, index: u64) -> Rng {
        let mut rng = Rng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound` for bounds far below 2^64.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        hosts: 100,
        measurements: 1,
        seed: 7,
        ns_per_unit: 1,
        sorted_tags: false,
    };

    fn lines(shape: Shape, first: u64, count: usize, round_rows: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        Generator::new(shape).write_lines(first, count, round_rows, &mut out, &mut offsets);
        assert_eq!(offsets.len(), count);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn timestamp_of(line: &str) -> u64 {
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn line_has_the_tsbs_cpu_shape() {
        let line = &lines(SHAPE, 0, 1, 0)[0];
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");

        let mut series = parts[0].split(',');
        assert_eq!(series.next(), Some("cpu"));
        let tag_keys: Vec<&str> = series.map(|t| t.split('=').next().unwrap()).collect();
        assert_eq!(
            tag_keys,
            [
                "hostname",
                "region",
                "datacenter",
                "rack",
                "os",
                "arch",
                "team",
                "service",
                "service_version",
                "service_environment"
            ]
        );
        assert!(parts[0].contains(",hostname=host_0,"));

        let fields: Vec<(&str, &str)> = parts[1]
            .split(',')
            .map(|f| f.split_once('=').unwrap())
            .collect();
        assert_eq!(fields.iter().map(|f| f.0).collect::<Vec<_>>(), FIELD_KEYS);
        for (_, value) in fields {
            let v: f64 = value.parse().unwrap();
            assert!((0.0..100.0).contains(&v), "{value}");
            assert!(value.contains('.'), "{value} must stay a float field");
        }
        assert_eq!(timestamp_of(line), START_NS);
    }

    #[test]
    fn average_line_is_near_386_bytes() {
        let all = lines(SHAPE, 0, 10_000, 0);
        let bytes: usize = all.iter().map(|l| l.len() + 1).sum();
        let average = bytes as f64 / all.len() as f64;
        assert!((376.0..=396.0).contains(&average), "average {average}");
    }

    #[test]
    fn sorted_tags_are_the_same_tags_sorted_by_key() {
        let tags = |line: &str| -> Vec<String> {
            let series = line.split(' ').next().unwrap();
            series.split(',').skip(1).map(str::to_owned).collect()
        };
        let sorted = Shape {
            sorted_tags: true,
            ..SHAPE
        };
        for (plain, sorted) in lines(SHAPE, 0, 50, 0).iter().zip(lines(sorted, 0, 50, 0)) {
            let (mut want, got) = (tags(plain), tags(&sorted));
            assert_ne!(want, got, "the data set's order is not sorted");
            want.sort();
            assert_eq!(got, want);
            // Only the tags moved: the fields and the timestamp are the same.
            assert_eq!(
                plain.split_once(' ').unwrap().1,
                sorted.split_once(' ').unwrap().1
            );
        }
    }

    #[test]
    fn hosts_and_measurements_give_distinct_series() {
        let shape = Shape {
            hosts: 3,
            measurements: 2,
            ..SHAPE
        };
        let first_row: Vec<String> = lines(shape, 0, 6, 0)
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect();
        let measurements: Vec<&str> = first_row
            .iter()
            .map(|s| s.split(',').next().unwrap())
            .collect();
        assert_eq!(
            measurements,
            ["cpu", "cpu_1", "cpu", "cpu_1", "cpu", "cpu_1"]
        );
        let mut unique = first_row.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 6);
        // The second row repeats the same series, one step later.
        let second_row = lines(shape, 6, 6, 0);
        for (a, b) in first_row.iter().zip(&second_row) {
            assert!(b.starts_with(a.as_str()));
            assert_eq!(timestamp_of(b), START_NS + STEP_NS);
        }
    }

    #[test]
    fn same_seed_gives_same_bytes_and_other_seed_differs() {
        assert_eq!(lines(SHAPE, 0, 500, 0), lines(SHAPE, 0, 500, 0));
        let other = Shape { seed: 8, ..SHAPE };
        assert_ne!(lines(SHAPE, 0, 500, 0), lines(other, 0, 500, 0));
    }

    #[test]
    fn any_slice_equals_the_same_lines_of_the_whole_stream() {
        let whole = lines(SHAPE, 0, 1_000, 0);
        assert_eq!(lines(SHAPE, 250, 300, 0), whole[250..550]);
    }

    #[test]
    fn timestamps_never_decrease_and_each_series_moves_forward() {
        let all = lines(SHAPE, 0, 1_000, 0);
        let stamps: Vec<u64> = all.iter().map(|l| timestamp_of(l)).collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
        // Line l and l + hosts are the same series, one row apart.
        for l in 0..900 {
            assert_eq!(stamps[l + 100], stamps[l] + STEP_NS);
        }
    }

    #[test]
    fn round_rows_shift_only_the_timestamps() {
        let base = lines(SHAPE, 0, 300, 0);
        let shifted = lines(SHAPE, 0, 300, 5);
        for (a, b) in base.iter().zip(&shifted) {
            let (a_head, _) = a.rsplit_once(' ').unwrap();
            let (b_head, _) = b.rsplit_once(' ').unwrap();
            assert_eq!(a_head, b_head);
            assert_eq!(timestamp_of(b), timestamp_of(a) + 5 * STEP_NS);
        }
    }

    #[test]
    fn coarse_precision_scales_timestamps_and_keeps_them_distinct() {
        let hours = Shape {
            ns_per_unit: ns_per_unit("h").unwrap(),
            ..SHAPE
        };
        let all = lines(hours, 0, 300, 0);
        assert_eq!(timestamp_of(&all[0]), START_NS / 3_600_000_000_000);
        assert_eq!(timestamp_of(&all[100]), timestamp_of(&all[0]) + 1);
        assert_eq!(ns_per_unit("us"), None, "InfluxDB 1.x reads \"us\" as ns");
    }
}
