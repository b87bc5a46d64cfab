import MeshgateEtcd
import MeshgateYAML

/// The sizes and depths the gateway accepts from the documents it reads:
/// its config (from the operator), and discovery's watched files and etcd
/// values (from whoever can write there: every replica that registers
/// itself can write etcd). Past a limit the document is refused whole,
/// with where and which limit; discovery keeps its last good endpoints.
/// The README's "Limits" lists them.
public enum InputLimits {
    /// A config file: large enough for thousands of clusters written out
    /// endpoint by endpoint, small enough that its tree (about 70 bytes a
    /// node, at worst two bytes of text a node) stays in the hundreds of MiB.
    public static let configFile = YAMLLimits(maxBytes: 8 << 20)
    /// A watched discovery file: 10,000 endpoints with a little metadata
    /// each take about 1 MiB.
    public static let discoveryFile = YAMLLimits(maxBytes: 4 << 20)
    /// One etcd value, which is one endpoint (`{"address": …, "weight": …,
    /// "metadata": {…}}`): room for an address, a weight and the most
    /// metadata an endpoint may have (`maxMetadataBytes`) written as JSON.
    /// etcd itself takes values up to 1.5 MiB.
    public static let etcdValue = YAMLLimits(maxBytes: 8 << 10)
    /// One etcd key under a discovery prefix. Kept keys are held (to follow
    /// their changes), so their length is bounded like their values; keys
    /// such as `/registry/<namespace>/<name>` take a few hundred bytes.
    public static let etcdKeyBytes = 1024
    /// The largest message the gateway takes from etcd (a page of a Range,
    /// a watch response): see `EtcdClient.defaultMaxMessageBytes`. Past it
    /// the call ends as the message's length prefix arrives.
    public static let etcdMessageBytes = EtcdClient.defaultMaxMessageBytes
    /// Keys asked for per Range page: as many good keys and values
    /// (`etcdKeyBytes` + `etcdValue`, with framing) as fill half of
    /// `etcdMessageBytes`, so that an honest page always fits. A page
    /// that does not (values over the limit) is asked again in halves.
    public static let etcdPageKeys = (etcdMessageBytes / 2) / (etcdKeyBytes + etcdValue.maxBytes + 64)
    /// Labels (`metadata:`) of one endpoint, from any source (the config,
    /// a discovery file, an etcd value): at most this many names, and at
    /// most this many bytes of names and values together. Every event
    /// loop's generation, the balancers' endpoint lists and `/clusters`
    /// carry them, for up to `max_endpoints` endpoints per source.
    public static let maxMetadataEntries = 32
    public static let maxMetadataBytes = 4096
    /// Endpoints one discovery source may give a cluster when its
    /// `max_endpoints` is not set; beyond them the rest are dropped.
    public static let defaultMaxEndpointsPerSource = 10_000
}
