import FilterABI

/// The `mg_host` table handed to every plugin: the functions the host
/// offers, implemented in Swift with C calling convention.
///
/// Functions tied to calls, attempts or timers become available as the
/// filter chain reaches the data path; until then they answer "not possible"
/// (-1 / 0) as the header allows.
enum PluginHostAPI {
    /// Built once, never mutated: plugins keep the pointer for the life of
    /// the process.
    nonisolated(unsafe) static let table: UnsafePointer<mg_host> = {
        let table = UnsafeMutablePointer<mg_host>.allocate(capacity: 1)
        table.initialize(to: mg_host(
            size: UInt32(MemoryLayout<mg_host>.size),
            abi_major: UInt32(MG_ABI_MAJOR),
            abi_minor: UInt32(MG_ABI_MINOR),
            reserved: 0,
            log: { level, plugin, message in
                let name = PluginHostAPI.string(plugin)
                let text = PluginHostAPI.string(message)
                switch level {
                case Int32(MG_LOG_DEBUG): Log.debug(text, ["plugin": name])
                case Int32(MG_LOG_INFO): Log.info(text, ["plugin": name])
                case Int32(MG_LOG_WARNING): Log.warning(text, ["plugin": name])
                default: Log.error(text, ["plugin": name])
                }
            },
            call_method: { _ in mg_str(ptr: nil, len: 0) },
            call_request_header: { _, _, _, _ in 0 },
            call_local_reply: { _, _, _ in },
            call_deadline_remaining_us: { _ in UInt64.max },
            attempt_set_request_header: { _, _, _ in -1 },
            attempt_response_header: { _, _, _, _ in 0 },
            call_add_response_header: { _, _, _ in -1 },
            call_start_attempt: { _, _ in -1 },
            call_cancel_attempts: { _, _ in },
            timer_start: { _, _, _, _, _ in 0 },
            timer_cancel: { _, _ in },
            endpoint_eject: { _, _, _, _ in -1 }))
        return UnsafePointer(table)
    }()

    static func string(_ s: mg_str) -> String {
        guard let ptr = s.ptr, s.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: s.len), as: UTF8.self)
    }
}
