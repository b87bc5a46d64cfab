// swift-tools-version:6.0
import PackageDescription

// Module map (docs/architecture.md draws it; ModuleBoundaryTests checks it):
//   C shims (CNGHTTP2, COpenSSL, CYAML) -> one Swift wrapper each, the only importer
//   (MeshgateHTTP2, MeshgateTLS, MeshgateYAML; `internal import`, checked by ModuleBoundaryTests)
//   MeshgatePosix: the one place libc calls that can fail are made
//   MeshgateTransport: the one client dialer (TCP, TLS, HTTP/2)
//   MeshgateGRPC: gRPC wire rules shared by the gateway and the sample service
//   MeshgateCallCore, MeshgateConfig, MeshgateSupport, MeshgateRouting, MeshgateDiscovery,
//   MeshgateUpstream, MeshgateOwnServices, MeshgatePluginHost: the gateway's parts, by concept
//   GatewayHost: the data path (connections, routing a call, ProxyCall, attempts, gRPC-Web)
//   MeshgateControl: the process above it (start, reload, drain, admin, dashboard, metrics)
//   meshgate: the command line; MeshSample: the sample upstream service
// The data path's modules (HTTP/2, the call core, routing, upstream pools,
// the plugin host and the proxy) build their release binaries without
// dynamic exclusivity checks: each of their classes is confined to one
// event loop and re-entry is queued (ProxyCall.handle, HTTP2Connection's
// pending events), so accesses never overlap; the checks cost ~3-6 % of the
// proxy's CPU (swift_beginAccess and its access set, per stream lookup,
// header and call event). This is the one opt-out: no property carries
// `@exclusivity(unchecked)`, so debug builds, which the unit tests run,
// check every access and trap on a violation.
//
// The modules a call passes through (the data path's, and those it calls
// into per call: support, config, gRPC rules, own services) are also built
// with cross-module optimization: the split into modules must not stop
// inlining or cost retains on the hot path (bench/run.sh counts retains).
// Those the data path calls into declare their API `public`, not `package`:
// Swift 6.3 neither inlines nor specializes a `package` declaration from
// another module (not even an @inlinable one), and cross-module
// optimization serializes only public ones (ModuleBoundaryTests keeps it so).
let crossModuleSettings: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]
let dataPathSettings: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))]

let package = Package(
    name: "Meshgate",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "meshgate", targets: ["meshgate"]),
        .executable(name: "mesh-sample", targets: ["MeshSample"]),
        .executable(name: "mesh-load", targets: ["MeshLoad"]),
        .library(name: "FilterABI", targets: ["FilterABI"]),
        // Filter plugins: each its own shared library, depending on FilterABI
        // (and PluginKit, linked statically into each).
        .library(name: "RoundRobin", type: .dynamic, targets: ["RoundRobin"]),
        .library(name: "LeastConn", type: .dynamic, targets: ["LeastConn"]),
        .library(name: "Random", type: .dynamic, targets: ["Random"]),
        .library(name: "ConsistentHash", type: .dynamic, targets: ["ConsistentHash"]),
        .library(name: "Retry", type: .dynamic, targets: ["Retry"]),
        .library(name: "Hedge", type: .dynamic, targets: ["Hedge"]),
        .library(name: "CircuitBreaker", type: .dynamic, targets: ["CircuitBreaker"]),
        .library(name: "OutlierDetection", type: .dynamic, targets: ["OutlierDetection"]),
        .library(name: "Tracing", type: .dynamic, targets: ["Tracing"]),
        .library(name: "RateLimit", type: .dynamic, targets: ["RateLimit"]),
        .library(name: "Mirror", type: .dynamic, targets: ["Mirror"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CNGHTTP2", path: "Sources/CNGHTTP2", pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(
            name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CYAML", path: "Sources/CYAML", pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]),
        .target(name: "FilterABI", path: "Sources/FilterABI"),
        .target(name: "RoundRobin", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/RoundRobin"),
        .target(name: "LeastConn", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/LeastConn"),
        .target(name: "Random", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/Random"),
        .target(name: "ConsistentHash", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/ConsistentHash"),
        // Linked statically into each plugin that uses it: config reading
        // and the C-boundary chores, not a run-time dependency.
        .target(name: "PluginKit", dependencies: ["FilterABI"], path: "Plugins/PluginKit"),
        .target(name: "Retry", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/Retry"),
        .target(name: "Hedge", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/Hedge"),
        .target(name: "CircuitBreaker", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/CircuitBreaker"),
        .target(name: "OutlierDetection", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/OutlierDetection"),
        // Traffic plugins (ABI 1.3); Tracing needs ABI 1.1.
        .target(name: "RateLimit", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/RateLimit"),
        .target(name: "Mirror", dependencies: ["FilterABI", "PluginKit"], path: "Plugins/Mirror"),
        .target(name: "Tracing", dependencies: ["FilterABI", "PluginKit", "ProtoWire", "MeshgatePosix"], path: "Plugins/Tracing"),
        // Protobuf wire format for hand-encoded messages (etcd, OTLP); linked statically.
        .target(name: "ProtoWire"),
        // The one place libc calls that can fail are made (errno -> thrown error).
        .target(name: "MeshgatePosix"),
        // Per-thread free lists handed to nghttp2 as its allocator.
        .target(name: "CFreeListAllocator"),
        .target(
            name: "MeshgateHTTP2",
            dependencies: [
                "CNGHTTP2", "CFreeListAllocator",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: dataPathSettings),
        // The one client dialer: TCP, TLS, HTTP/2 SETTINGS, keepalive.
        .target(
            name: "MeshgateTransport",
            dependencies: [
                "MeshgateHTTP2", "MeshgateTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        .target(name: "MeshgateYAML", dependencies: ["CYAML", "MeshgateJSON"]),
        // The one JSON writer: strings escaped one way, documents built
        // without hand-placed commas (logs, etcd values, YAML's JSON form, admin bodies).
        .target(name: "MeshgateJSON"),
        .target(
            name: "MeshgateTLS",
            dependencies: ["COpenSSL", .product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "MeshgateGRPC",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: crossModuleSettings),
        // etcd v3 over gRPC (discovery, registration) on Meshgate's own HTTP/2.
        .target(
            name: "MeshgateEtcd",
            dependencies: [
                "ProtoWire", "MeshgateHTTP2", "MeshgateGRPC", "MeshgateGRPCCalls", "MeshgateTLS", "MeshgateTransport", "MeshgateJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        // The call's decisions (attempts, retries, hedges, what to send where)
        // as a value-type state machine: events in, actions out. No I/O,
        // no event loop, no clock, no plugins.
        .target(
            name: "MeshgateCallCore",
            dependencies: [
                "MeshgateHTTP2", "MeshgateGRPC", "MeshgateGRPCCalls",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: dataPathSettings),
        // The configuration: its types, the YAML reader with located errors,
        // the product description's format, input limits. No I/O beyond
        // reading the files it is given.
        .target(
            name: "MeshgateConfig",
            dependencies: ["MeshgateYAML", "MeshgatePosix", "MeshgateEtcd"],
            swiftSettings: crossModuleSettings),
        // What every part of the gateway shares: logs, events, errors, the
        // plugins' control thread, TLS contexts that follow their files.
        .target(
            name: "MeshgateSupport",
            dependencies: [
                "MeshgateConfig", "MeshgateTLS", "MeshgatePosix", "MeshgateHTTP2", "MeshgateGRPCCalls", "MeshgateYAML", "MeshgateJSON", "FilterABI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: crossModuleSettings),
        // Where endpoints come from: DNS (its own resolver), watched files,
        // etcd; each source bounded, each answer checked against the
        // gateway's own addresses.
        .target(
            name: "MeshgateDiscovery",
            dependencies: [
                "MeshgateConfig", "MeshgateSupport", "MeshgateEtcd", "MeshgateGRPC", "MeshgateGRPCCalls", "MeshgateTLS",
                "MeshgateYAML", "MeshgatePosix",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]),
        // The config compiled for serving: route tables (what serves a
        // path), per listener, shared read-only by every event loop.
        .target(
            name: "MeshgateRouting",
            dependencies: ["MeshgateConfig", "MeshgateSupport", "MeshgateHTTP2"],
            swiftSettings: dataPathSettings),
        // Upstream endpoints as one event loop sees them: connection pools
        // per endpoint and cluster, ejections, active health checks and the
        // health state they keep. Gets its loop's parts as an `UpstreamLoop`.
        .target(
            name: "MeshgateUpstream",
            dependencies: [
                "MeshgateCallCore", "MeshgateConfig", "MeshgateSupport", "MeshgateDiscovery", "MeshgateRouting", "MeshgateHTTP2",
                "MeshgateGRPC", "MeshgateGRPCCalls", "MeshgateTLS", "MeshgateTransport", "MeshgatePosix", "GRPCHealthProto", "FilterABI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: dataPathSettings),
        // The gateway's own gRPC services, served on its listeners:
        // grpc.health.v1 and server reflection merged from the clusters.
        .target(
            name: "MeshgateOwnServices",
            dependencies: [
                "MeshgateConfig", "MeshgateSupport", "MeshgateRouting", "MeshgateUpstream", "MeshgateHTTP2", "MeshgateGRPC",
                "MeshgateGRPCCalls", "MeshgateTransport", "GRPCHealthProto", "ProtoWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: crossModuleSettings),
        // The filter plugins' host: images loaded with dlopen, filter chains
        // per route, the C ABI's host functions, the per-call hook runner.
        // Calls and attempts are opaque handles here; the data path provides
        // the host functions that act on them (`DataPathHostFunctions`).
        .target(
            name: "MeshgatePluginHost",
            dependencies: [
                "FilterABI", "MeshgateCallCore", "MeshgateConfig", "MeshgateSupport", "MeshgateUpstream", "MeshgateGRPC",
                "MeshgateHTTP2", "MeshgatePosix", "MeshgateTLS", "MeshgateYAML",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: dataPathSettings),
        .target(
            name: "GatewayHost",
            dependencies: [
                "MeshgateCallCore", "MeshgateConfig", "MeshgateSupport", "MeshgateDiscovery", "MeshgateRouting", "MeshgateUpstream", "MeshgateOwnServices", "MeshgatePluginHost", "MeshgateHTTP2", "MeshgateYAML", "MeshgateGRPC", "MeshgateGRPCCalls", "MeshgateTLS", "MeshgateTransport",
                "MeshgateEtcd", "ProtoWire",
                "GRPCHealthProto", "FilterABI", "MeshgatePosix",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: dataPathSettings),
        // The gateway as a process: start, reload (generations), drain and
        // stop; the admin server, the dashboard, /metrics gathering. Above
        // the data path, which knows nothing of it.
        .target(
            name: "MeshgateControl",
            dependencies: [
                "GatewayHost", "MeshgateCallCore", "MeshgateConfig", "MeshgateSupport", "MeshgateDiscovery", "MeshgateRouting",
                "MeshgateUpstream", "MeshgateOwnServices", "MeshgatePluginHost", "MeshgateHTTP2", "MeshgateGRPC", "MeshgateTLS", "MeshgatePosix", "MeshgateYAML",
                "MeshgateJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        .executableTarget(
            name: "meshgate",
            dependencies: [
                "GatewayHost", "MeshgateControl", "MeshgatePluginHost", "MeshgateConfig", "MeshgateSupport", "MeshgateRouting", "MeshgateUpstream", "MeshgateEtcd", "MeshgateTLS", "MeshgatePosix",
                "GRPCHealthProto", "MeshgateGRPC", "MeshgateGRPCCalls", "MeshgateHTTP2", "MeshgateTransport", "MeshgateYAML",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .target(
            name: "GRPCHealthProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .target(
            name: "MeshgateGRPCCalls",
            dependencies: [
                "MeshgateHTTP2", "MeshgateGRPC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: crossModuleSettings),
        .target(
            name: "MeshProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .executableTarget(
            name: "MeshSample",
            dependencies: [
                "MeshProto", "GRPCHealthProto", "MeshgatePosix", "MeshgateHTTP2", "MeshgateGRPC", "MeshgateGRPCCalls", "MeshgateTLS", "MeshgateEtcd", "MeshgateJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // Bidirectional-streaming load for bench/ (h2load speaks only unary).
        .executableTarget(
            name: "MeshLoad",
            dependencies: [
                "MeshProto", "MeshgateHTTP2", "MeshgateGRPC", "MeshgateGRPCCalls", "MeshgateTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(
            name: "MeshgateTests",
            dependencies: [
                "GatewayHost", "MeshgateControl", "MeshgateConfig", "MeshgateDiscovery", "MeshgateGRPC", "MeshgateGRPCCalls", "MeshgateHTTP2", "MeshgateYAML", "MeshgateEtcd", "ProtoWire",
                "ConsistentHash", "PluginKit", "MeshgateTransport", "MeshgatePosix", "CFreeListAllocator", "MeshgateTestSupport", "MeshgateJSON",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Tests/MeshgateTests"),
        // What the test targets share (a seeded generator); never linked into the product.
        .target(name: "MeshgateTestSupport", path: "Tests/MeshgateTestSupport"),
        .testTarget(
            name: "MeshgateCallCoreTests",
            dependencies: [
                "MeshgateCallCore", "MeshgateGRPC", "MeshgateHTTP2",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/MeshgateCallCoreTests"),
        .testTarget(
            name: "MeshgateConfigTests",
            dependencies: ["MeshgateConfig", "MeshgateYAML", "MeshgateTestSupport"],
            path: "Tests/MeshgateConfigTests"),
        .testTarget(
            name: "MeshgateDiscoveryTests",
            dependencies: [
                "MeshgateDiscovery", "MeshgateConfig", "MeshgateSupport", "MeshgateEtcd", "ProtoWire", "MeshgateTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/MeshgateDiscoveryTests"),
        .testTarget(
            name: "MeshgateRoutingTests",
            dependencies: ["MeshgateRouting", "MeshgateConfig", "MeshgateSupport", "MeshgateHTTP2", "MeshgateTestSupport"],
            path: "Tests/MeshgateRoutingTests"),
        .testTarget(
            name: "MeshgateSupportTests",
            dependencies: ["MeshgateSupport", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/MeshgateSupportTests"),
        .testTarget(
            name: "MeshgateUpstreamTests",
            dependencies: ["MeshgateUpstream"],
            path: "Tests/MeshgateUpstreamTests"),
        .testTarget(
            name: "MeshgatePluginHostTests",
            dependencies: ["MeshgatePluginHost", "FilterABI", "MeshgateHTTP2"],
            path: "Tests/MeshgatePluginHostTests"),
        .testTarget(
            name: "MeshgateOwnServicesTests",
            dependencies: [
                "MeshgateOwnServices", "MeshgateConfig", "MeshgateRouting", "MeshgateYAML", "ProtoWire",
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/MeshgateOwnServicesTests"),
        .testTarget(
            name: "MeshgateControlTests",
            dependencies: [
                "MeshgateControl", "GatewayHost", "MeshgateConfig", "MeshgateSupport", "MeshgateYAML",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/MeshgateControlTests"),
    ],
    swiftLanguageModes: [.v6]
)
