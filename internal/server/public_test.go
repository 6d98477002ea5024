package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// publicAPI is what a device may call, by service: the public port must
// describe exactly this.
var publicAPI = map[string][]string{
	"contractual.v1.AuditService":   {"CheckConsistency", "Entries", "GetCheckpoint", "LatestCheckpoint", "Prune", "RecordExport", "Segments", "Tail", "Verify"},
	"contractual.v1.BrokerService":  {"DeleteSecret", "ListSecrets", "PutSecret", "RotateKey"},
	"contractual.v1.JobRunService":  {"GetRun", "ListRuns", "RunJob"},
	"contractual.v1.JobService":     {"ApproveJob", "CreateJob", "DeleteJob", "GetJob", "ListJobs", "PauseJob", "RejectJob", "ResumeJob"},
	"contractual.v1.PairingService": {"ApprovePairing", "ApproveWithSetupCode", "BeginPairing", "CompletePairing", "ListDevices", "ListPairingRequests", "RejectPairing", "RevokeDevice", "Unpair"},
	"contractual.v1.PolicyService":  {"Approve", "ApproveCall", "DenyCall", "GetCallApproval", "GetContract", "ListCallApprovals", "ListContracts", "Publish", "Reject", "Revoke"},
	"contractual.v1.SessionService": {"CloseSession", "GetArtifact", "GetSession", "ListSessions", "ListTools", "OpenSession", "Send", "WatchSession"},
	"contractual.v1.ToolService":    {"Invoke"},
}

// reflection is one version of the reflection protocol, through grpc-go's
// client (as grpcurl uses it).
type reflection struct {
	name string
	// list returns the services; file returns the methods of the services
	// in the files containing symbol, or the error code.
	list func(ctx context.Context) ([]string, error)
	file func(ctx context.Context, symbol string) (map[string][]string, codes.Code, error)
}

func reflectionClients(cc *grpc.ClientConn) []reflection {
	v1 := reflectv1.NewServerReflectionClient(cc)
	v1alpha := reflectv1alpha.NewServerReflectionClient(cc)
	return []reflection{
		{
			name: "v1",
			list: func(ctx context.Context) ([]string, error) {
				r, err := ask(ctx, v1, &reflectv1.ServerReflectionRequest{MessageRequest: &reflectv1.ServerReflectionRequest_ListServices{}})
				var out []string
				for _, s := range r.GetListServicesResponse().GetService() {
					out = append(out, s.GetName())
				}
				return out, err
			},
			file: func(ctx context.Context, symbol string) (map[string][]string, codes.Code, error) {
				r, err := ask(ctx, v1, &reflectv1.ServerReflectionRequest{MessageRequest: &reflectv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
				if e := r.GetErrorResponse(); e != nil {
					return nil, codes.Code(e.GetErrorCode()), err
				}
				m, err2 := methodsIn(r.GetFileDescriptorResponse().GetFileDescriptorProto())
				return m, codes.OK, firstErr(err, err2)
			},
		},
		{
			name: "v1alpha",
			list: func(ctx context.Context) ([]string, error) {
				r, err := ask(ctx, v1alpha, &reflectv1alpha.ServerReflectionRequest{MessageRequest: &reflectv1alpha.ServerReflectionRequest_ListServices{}})
				var out []string
				for _, s := range r.GetListServicesResponse().GetService() {
					out = append(out, s.GetName())
				}
				return out, err
			},
			file: func(ctx context.Context, symbol string) (map[string][]string, codes.Code, error) {
				r, err := ask(ctx, v1alpha, &reflectv1alpha.ServerReflectionRequest{MessageRequest: &reflectv1alpha.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
				if e := r.GetErrorResponse(); e != nil {
					return nil, codes.Code(e.GetErrorCode()), err
				}
				m, err2 := methodsIn(r.GetFileDescriptorResponse().GetFileDescriptorProto())
				return m, codes.OK, firstErr(err, err2)
			},
		},
	}
}

// ask sends one request on a new reflection stream and returns the answer.
func ask[Req, Resp any, C interface {
	Send(*Req) error
	Recv() (*Resp, error)
	CloseSend() error
}](ctx context.Context, client interface {
	ServerReflectionInfo(context.Context, ...grpc.CallOption) (C, error)
}, req *Req) (*Resp, error) {
	stream, err := client.ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	defer stream.CloseSend()
	// io.EOF from Send means the server ended the stream (a refusal, say):
	// its status comes from Recv.
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.Recv()
}

// methodsIn returns the methods of every service in the serialized files.
func methodsIn(files [][]byte) (map[string][]string, error) {
	out := map[string][]string{}
	for _, b := range files {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(b, &fd); err != nil {
			return nil, err
		}
		for _, sd := range fd.GetService() {
			var ms []string
			for _, m := range sd.GetMethod() {
				ms = append(ms, m.GetName())
			}
			slices.Sort(ms)
			out[fd.GetPackage()+"."+sd.GetName()] = ms
		}
	}
	return out, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestReflectionShowsOnlyThePublicAPI: server reflection (v1 and v1alpha,
// through grpc-go's client, with or without a token) lists the public
// services only and describes only their public methods; internal
// services and methods are not found; health knows only public services.
func TestReflectionShowsOnlyThePublicAPI(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	cc, err := grpc.NewClient("passthrough:///"+addr(s), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var want []string
	for svc := range publicAPI {
		want = append(want, svc)
	}
	slices.Sort(want)
	for _, ctx := range []context.Context{context.Background(), metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)} {
		for _, r := range reflectionClients(cc) {
			got, err := r.list(ctx)
			if err != nil {
				t.Fatalf("%s: list: %v", r.name, err)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s lists %v, want %v", r.name, got, want)
			}
			for svc, methods := range publicAPI {
				files, code, err := r.file(ctx, svc)
				if err != nil || code != codes.OK {
					t.Fatalf("%s: file of %s: %v %v", r.name, svc, code, err)
				}
				if !slices.Equal(files[svc], methods) {
					t.Errorf("%s describes %s with %v, want %v", r.name, svc, files[svc], methods)
				}
				for other, ms := range files {
					if _, public := publicAPI[other]; !public {
						t.Errorf("%s describes %s (%v) in the file of %s", r.name, other, ms, svc)
					}
				}
			}
			for _, symbol := range []string{
				"contractual.v1.RunnerService", "contractual.v1.RunnerService.Execute",
				"contractual.v1.PolicyService.Evaluate", "contractual.v1.PolicyService.GetModule", "contractual.v1.PolicyService.GetVerifier",
				"contractual.v1.BrokerService.IssueHandle", "contractual.v1.BrokerService.RedeemHandle",
				"contractual.v1.AuditService.Append",
				"contractual.v1.JobInternalService", "contractual.v1.JobInternalService.WatchJobs",
				"contractual.v1.WorkerInternalService", "contractual.v1.SchedulerInternalService",
				// Messages only internal procedures use.
				"contractual.v1.EvaluateRequest", "contractual.v1.ExecuteRequest",
				"contractual.v1.RedeemHandleResponse", "contractual.v1.AppendRequest",
				"contractual.v1.WatchJobsRequest", "contractual.v1.EnqueueRequest",
			} {
				if _, code, err := r.file(ctx, symbol); err != nil || code != codes.NotFound {
					t.Errorf("%s: %s: %v %v, want not found", r.name, symbol, code, err)
				}
			}
			// The messages the public methods use are there.
			if _, code, err := r.file(ctx, "contractual.v1.InvokeResponse"); err != nil || code != codes.OK {
				t.Errorf("%s: InvokeResponse: %v %v", r.name, code, err)
			}
		}
	}

	health := healthpb.NewHealthClient(cc)
	for svc := range publicAPI {
		if r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %s: %v %v", svc, r, err)
		}
	}
	if _, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "contractual.v1.RunnerService"}); status.Code(err) != codes.NotFound {
		t.Errorf("health of the runner: %v", err)
	}
}

// TestReflectionAndHealth: grpcurl and buf curl find the services by
// server reflection, over gRPC on h2c, through connect's client too; the
// health service answers.
func TestReflectionAndHealth(t *testing.T) {
	s, _ := start(t)
	h2c := &http.Client{Transport: &http.Transport{Protocols: func() *http.Protocols {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return p
	}()}}
	stream := grpcreflect.NewClient(h2c, s.URL).NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		got = append(got, string(n))
	}
	slices.Sort(got)
	if strings.Join(got, " ") != "contractual.v1.AuditService contractual.v1.BrokerService contractual.v1.JobRunService contractual.v1.JobService contractual.v1.PairingService contractual.v1.PolicyService contractual.v1.SessionService contractual.v1.ToolService" {
		t.Errorf("reflection lists %v", got)
	}
	res, err := grpchealth.NewClient(h2c, s.URL, connect.WithGRPC()).Check(context.Background(), &grpchealth.CheckRequest{Service: "contractual.v1.ToolService"})
	if err != nil || res.Status != grpchealth.StatusServing {
		t.Errorf("health: %v %v", res, err)
	}
}
