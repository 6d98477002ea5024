package gateway

import (
	"net/http"
	"slices"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/contractual/contractual/internal/errs"
)

// publicDescriptors describes the public API only: the files that define
// services, with every procedure that is not in public removed (and every
// service left without one), the files they import, and in every file only
// the messages and enums that the public procedures use. It returns them
// and the names of the services left. Server reflection serves these, so a
// caller sees only what it may call.
func publicDescriptors(services []string, public map[string]bool) (*protoregistry.Files, []string, error) {
	var files []protoreflect.FileDescriptor
	seen := map[string]bool{}
	var addFile func(fd protoreflect.FileDescriptor)
	addFile = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			addFile(imports.Get(i).FileDescriptor)
		}
		files = append(files, fd)
	}
	used := map[protoreflect.FullName]bool{}
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, nil, errs.Wrap(errs.Internal, err, "service %s", name)
		}
		addFile(d.ParentFile())
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			if m := methods.Get(i); public["/"+name+"/"+string(m.Name())] {
				use(used, m.Input())
				use(used, m.Output())
			}
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	var names []string
	for _, fd := range files {
		pkg := fd.Package()
		fdp := protodesc.ToFileDescriptorProto(fd)
		fdp.Service = slices.DeleteFunc(fdp.Service, func(sd *descriptorpb.ServiceDescriptorProto) bool {
			svc := pkg.Append(protoreflect.Name(sd.GetName()))
			// A file may define services the gateway does not serve
			// (jobs.proto does): only the named services are described.
			sd.Method = slices.DeleteFunc(sd.Method, func(m *descriptorpb.MethodDescriptorProto) bool {
				return !public["/"+string(svc)+"/"+m.GetName()] || !slices.Contains(services, string(svc))
			})
			if len(sd.Method) == 0 {
				return true
			}
			names = append(names, string(svc))
			return false
		})
		fdp.MessageType = slices.DeleteFunc(fdp.MessageType, func(m *descriptorpb.DescriptorProto) bool {
			return !used[pkg.Append(protoreflect.Name(m.GetName()))]
		})
		fdp.EnumType = slices.DeleteFunc(fdp.EnumType, func(e *descriptorpb.EnumDescriptorProto) bool {
			return !used[pkg.Append(protoreflect.Name(e.GetName()))]
		})
		set.File = append(set.File, fdp)
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, nil, errs.Wrap(errs.Internal, err, "public descriptors")
	}
	slices.Sort(names)
	return reg, names, nil
}

// use marks d, the messages that contain it and every type its fields
// refer to as used.
func use(used map[protoreflect.FullName]bool, d protoreflect.Descriptor) {
	if d == nil || used[d.FullName()] {
		return
	}
	used[d.FullName()] = true
	if p, ok := d.Parent().(protoreflect.MessageDescriptor); ok {
		use(used, p)
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return
	}
	fields := md.Fields()
	for i := range fields.Len() {
		if f := fields.Get(i); f.Message() != nil {
			use(used, f.Message())
		} else if f.Enum() != nil {
			use(used, f.Enum())
		}
	}
	nested := md.Messages()
	for i := range nested.Len() {
		use(used, nested.Get(i))
	}
	enums := md.Enums()
	for i := range enums.Len() {
		use(used, enums.Get(i))
	}
}

// publicIntrospection returns the handlers of server reflection (v1 and
// v1alpha) and health, by path, describing only the public procedures of
// services.
func publicIntrospection(services []string, public map[string]bool, opts ...connect.HandlerOption) (map[string]http.Handler, error) {
	files, names, err := publicDescriptors(services, public)
	if err != nil {
		return nil, err
	}
	reflector := grpcreflect.NewReflector(grpcreflect.NamerFunc(func() []string { return names }), grpcreflect.WithDescriptorResolver(files))
	out := map[string]http.Handler{}
	for _, mount := range []func(*grpcreflect.Reflector, ...connect.HandlerOption) (string, http.Handler){grpcreflect.NewHandlerV1, grpcreflect.NewHandlerV1Alpha} {
		p, h := mount(reflector, opts...)
		out[p] = h
	}
	p, h := grpchealth.NewHandler(grpchealth.NewStaticChecker(names...), opts...)
	out[p] = h
	return out, nil
}
