package server

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
// service left without one), and the files they import, unchanged. It
// returns them and the names of the services left. Server reflection
// serves these, so a caller sees only what it may call.
func publicDescriptors(services []string, public map[string]bool) (*protoregistry.Files, []string, error) {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var names []string
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		fdp := protodesc.ToFileDescriptorProto(fd)
		fdp.Service = slices.DeleteFunc(fdp.Service, func(sd *descriptorpb.ServiceDescriptorProto) bool {
			svc := fd.Package().Append(protoreflect.Name(sd.GetName()))
			sd.Method = slices.DeleteFunc(sd.Method, func(m *descriptorpb.MethodDescriptorProto) bool {
				return !public["/"+string(svc)+"/"+m.GetName()]
			})
			if len(sd.Method) == 0 {
				return true
			}
			names = append(names, string(svc))
			return false
		})
		set.File = append(set.File, fdp)
	}
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, nil, errs.Wrap(errs.Internal, err, "service %s", name)
		}
		add(d.ParentFile())
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, nil, errs.Wrap(errs.Internal, err, "public descriptors")
	}
	slices.Sort(names)
	return files, names, nil
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
