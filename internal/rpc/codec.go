package rpc

import (
	"errors"
	"regexp"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Codecs replaces Connect's JSON and binary codecs with ones that encode
// the same way but whose errors say what is wrong with a request in the
// API's terms (the field, the line and column) instead of naming the Go
// type it was decoded into. Servers pass them to every handler.
func Codecs() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(jsonCodec{"json"}),
		connect.WithCodec(jsonCodec{"json; charset=utf-8"}),
		connect.WithCodec(binaryCodec{}),
	}
}

// protoPrefix is the prefix the protobuf module puts on its errors (with a
// space or, at random per build, a no-break space).
var protoPrefix = regexp.MustCompile(`^proto:[\s\x{00a0}]*`)

// requestError words a decoding error for the caller.
func requestError(what string, err error) error {
	return errors.New("the request is not " + what + ": " + protoPrefix.ReplaceAllString(err.Error(), ""))
}

// jsonCodec is Connect's JSON codec, but strict: an unknown field or enum
// name is an error, not silently dropped, because JSON requests come from
// people typing curl commands, for whom a misspelt field that is ignored
// (a filter that filters nothing, say) is worse than an error. Programs
// speak the binary codec, which keeps unknown fields.
type jsonCodec struct{ name string }

func (c jsonCodec) Name() string { return c.name }

func (jsonCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, errNotProto
	}
	return protojson.Marshal(pm)
}

func (jsonCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return errNotProto
	}
	if len(b) == 0 {
		return errors.New("the request is empty: send a JSON object ({} for no fields)")
	}
	if err := protojson.Unmarshal(b, pm); err != nil {
		return requestError("valid JSON for this procedure", err)
	}
	return nil
}

// binaryCodec is Connect's protobuf codec.
type binaryCodec struct{}

func (binaryCodec) Name() string { return "proto" }

func (binaryCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, errNotProto
	}
	return proto.Marshal(pm)
}

func (binaryCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return errNotProto
	}
	if err := proto.Unmarshal(b, pm); err != nil {
		return requestError("a valid protobuf message for this procedure", err)
	}
	return nil
}

var errNotProto = errors.New("not a protobuf message")
