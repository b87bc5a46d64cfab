import MeshgateYAML

/// The sizes and depths the gateway accepts from the documents it reads:
/// its config (from the operator), and discovery's watched files and etcd
/// values (from whoever can write there: every replica that registers
/// itself can write etcd). Past a limit the document is refused whole,
/// with where and which limit; discovery keeps its last good endpoints.
/// The README's "Input limits" lists them.
public enum InputLimits {
    /// A config file: large enough for thousands of clusters written out
    /// endpoint by endpoint, small enough that its tree (about 70 bytes a
    /// node, at worst two bytes of text a node) stays in the hundreds of MiB.
    public static let configFile = YAMLLimits(maxBytes: 8 << 20)
    /// A watched discovery file: 10,000 endpoints with a little metadata
    /// each take about 1 MiB.
    public static let discoveryFile = YAMLLimits(maxBytes: 4 << 20)
    /// One etcd value, which is one endpoint (`{"address": …, "weight": …,
    /// "metadata": {…}}`); etcd itself takes values up to 1.5 MiB.
    public static let etcdValue = YAMLLimits(maxBytes: 64 << 10)
    /// Endpoints one discovery source may give a cluster when its
    /// `max_endpoints` is not set; beyond them the rest are dropped.
    public static let defaultMaxEndpointsPerSource = 10_000
}
