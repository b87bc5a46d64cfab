import FilterABI

/// One compiled `filters:` entry (or a default balancer): the plugin image
/// and the config object its `config_new` returned.
///
/// `@unchecked Sendable`: the config pointer belongs to the plugin, which
/// the ABI requires to treat it as immutable or synchronized once
/// `config_new` returns; everything else is immutable.
public final class FilterHandle: @unchecked Sendable {
    public let image: PluginImage
    /// Dense index across the generation, for loop-local instance tables.
    let index: Int
    let config: UnsafeMutableRawPointer?
    let context: PluginConfigContext
    /// Where it was declared, for messages.
    public let field: String
    private var destroyed = false

    init(image: PluginImage, index: Int, config: UnsafeMutableRawPointer?, context: PluginConfigContext, field: String) {
        self.image = image
        self.index = index
        self.config = config
        self.context = context
        self.field = field
    }

    var hooks: mg_plugin { image.descriptor.pointee }

    /// Runs config_destroy (exactly once). Callers make sure no instance,
    /// call or attempt made from this config is left.
    func destroy() {
        guard !destroyed else { return }
        destroyed = true
        hooks.config_destroy?(config)
    }
}

/// The host's side of one config (`mg_config_ctx *`): what timers and
/// ejections will need. Passed to the plugin as an opaque pointer.
final class PluginConfigContext {
    let pluginName: String
    init(pluginName: String) { self.pluginName = pluginName }

    var opaque: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }
}
