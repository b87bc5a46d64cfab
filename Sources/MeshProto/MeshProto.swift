/// Generated protobuf types of the sample service (see proto/README.md).
