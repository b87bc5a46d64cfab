import FilterABI
import MeshgateSupport

/// One compiled `filters:` entry (or a default balancer): the plugin image
/// and the config object its `config_new` returned.
///
/// `@unchecked Sendable`: the config pointer belongs to the plugin, which
/// the ABI requires to treat it as immutable or synchronized once
/// `config_new` returns; `destroyed` is only touched on the control thread;
/// everything else is immutable.
public final class FilterHandle: @unchecked Sendable {
    public let image: PluginImage
    /// Dense index across the generation, for loop-local instance tables.
    public let index: Int
    public let config: UnsafeMutableRawPointer?
    public let context: PluginConfigContext
    /// Where it was declared, for messages.
    public let field: String
    private var destroyed = false

    public init(image: PluginImage, index: Int, config: UnsafeMutableRawPointer?, context: PluginConfigContext, field: String) {
        self.image = image
        self.index = index
        self.config = config
        self.context = context
        self.field = field
    }

    public var hooks: mg_plugin { image.hooks }

    /// What a call's hooks need of this handle, as plain values.
    public var link: FilterLink { FilterLink(index: index, config: config, hooks: image.hooks) }

    /// Cancels the config's timers, then runs config_destroy (exactly
    /// once), both on the control thread. Callers make sure no instance,
    /// call or attempt made from this config is left.
    public func destroy() {
        ControlThread.run {
            guard !self.destroyed else { return }
            self.destroyed = true
            self.context.cancelAllTimers()
            self.hooks.config_destroy?(self.config)
        }
    }
}

/// A filter of a chain as the data path uses it: plain values (no
/// reference), so running a hook over a chain retains nothing.
public struct FilterLink: @unchecked Sendable {
    // @unchecked Sendable: `config` is the plugin's immutable-or-synchronized
    // config object (see FilterHandle); `hooks` holds C function pointers.
    /// `FilterHandle.index`: the slot of its loop-local instances.
    public let index: Int
    public let config: UnsafeMutableRawPointer?
    public let hooks: mg_plugin
}
