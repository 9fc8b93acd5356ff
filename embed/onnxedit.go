package embed

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// The ONNX protobuf field numbers this file reads and writes (onnx/onnx.proto3). The edit is
// done on the raw wire format rather than through generated ONNX types so that the package
// needs no ONNX dependency, and so that every byte it does not touch is copied verbatim.
const (
	onnxModelGraph       = 7  // ModelProto.graph
	onnxGraphNode        = 1  // GraphProto.node
	onnxGraphInitializer = 5  // GraphProto.initializer
	onnxGraphInput       = 11 // GraphProto.input
	onnxGraphOutput      = 12 // GraphProto.output
	onnxNodeInput        = 1  // NodeProto.input
	onnxNodeOutput       = 2  // NodeProto.output
	onnxNodeName         = 3  // NodeProto.name
	onnxNodeOpType       = 4  // NodeProto.op_type
	onnxTensorName       = 8  // TensorProto.name (an initializer)
	onnxValueInfoName    = 1  // ValueInfoProto.name
	onnxValueInfoType    = 2  // ValueInfoProto.type
	onnxTypeTensor       = 1  // TypeProto.tensor_type
	onnxTensorElemType   = 1  // TypeProto.Tensor.elem_type
	onnxTensorShape      = 2  // TypeProto.Tensor.shape
	onnxShapeDim         = 1  // TensorShapeProto.dim
	onnxDimParam         = 2  // TensorShapeProto.Dimension.dim_param
	onnxFloat            = 1  // TensorProto.DataType FLOAT
)

// onnxGraphNames is what a graph defines and exposes, by name.
type onnxGraphNames struct {
	// defined holds every tensor a node may read: node outputs, initializers, graph inputs.
	defined map[string]bool
	// nodes holds the node names, outputs the graph output names.
	nodes   map[string]bool
	outputs []string
}

// onnxFields calls f for each top-level field of the protobuf message b, with the field's
// whole encoding (tag included) and, for length-delimited fields, its payload.
func onnxFields(b []byte, f func(num protowire.Number, raw, payload []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad protobuf tag: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return fmt.Errorf("bad protobuf field %d: %w", num, protowire.ParseError(m))
		}
		raw := b[:n+m]
		var payload []byte
		if typ == protowire.BytesType {
			payload, _ = protowire.ConsumeBytes(b[n:])
		}
		if err := f(num, raw, payload); err != nil {
			return err
		}
		b = b[n+m:]
	}
	return nil
}

// onnxStrings returns every occurrence of the string field num of message b.
func onnxStrings(b []byte, num protowire.Number) ([]string, error) {
	var out []string
	err := onnxFields(b, func(n protowire.Number, _, payload []byte) error {
		if n == num {
			out = append(out, string(payload))
		}
		return nil
	})
	return out, err
}

// readGraphNames collects the names a graph defines.
func readGraphNames(graph []byte) (onnxGraphNames, error) {
	g := onnxGraphNames{defined: map[string]bool{}, nodes: map[string]bool{}}
	err := onnxFields(graph, func(num protowire.Number, _, payload []byte) error {
		var names []string
		var err error
		switch num {
		case onnxGraphNode:
			if names, err = onnxStrings(payload, onnxNodeOutput); err != nil {
				return fmt.Errorf("node: %w", err)
			}
			nn, err := onnxStrings(payload, onnxNodeName)
			if err != nil {
				return fmt.Errorf("node: %w", err)
			}
			for _, n := range nn {
				g.nodes[n] = true
			}
		case onnxGraphInitializer:
			names, err = onnxStrings(payload, onnxTensorName)
		case onnxGraphInput:
			names, err = onnxStrings(payload, onnxValueInfoName)
		case onnxGraphOutput:
			if names, err = onnxStrings(payload, onnxValueInfoName); err == nil {
				g.outputs = append(g.outputs, names...)
			}
			names = nil
		}
		if err != nil {
			return fmt.Errorf("graph field %d: %w", num, err)
		}
		for _, n := range names {
			g.defined[n] = true
		}
		return nil
	})
	return g, err
}

// onnxGraph returns the payload of the model's graph field.
func onnxGraph(model []byte) ([]byte, error) {
	var graph []byte
	found := false
	err := onnxFields(model, func(num protowire.Number, _, payload []byte) error {
		if num == onnxModelGraph {
			if found {
				return fmt.Errorf("the model has more than one graph field")
			}
			graph, found = payload, true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("the model has no graph")
	}
	return graph, nil
}

// AddDequantizedOutput returns a copy of an ONNX model with one more graph output, out:
// float32 DequantizeLinear(d.Input, d.Scale, d.ZeroPoint). It exists to read a quantized
// model's intermediate feature map, which its graph does not expose, without keeping a
// second model file: the derived bytes are a pure function of the model bytes and d (same
// input, same output, byte for byte), so a model Identity over the source file and the spec
// names the derived model too.
//
// The three inputs must be tensors the graph defines (node outputs, initializers or graph
// inputs) and out a name it does not; otherwise the model is refused with an error naming
// what is missing. Every byte of the model besides the graph's length prefix is kept; the
// node and the output are appended to the end of the graph message, which protobuf decodes
// as appended repeated fields, and the node may go last because its inputs exist before it.
func AddDequantizedOutput(model []byte, d Dequantize, out string) ([]byte, error) {
	graph, err := onnxGraph(model)
	if err != nil {
		return nil, fmt.Errorf("embed: derive model: %w", err)
	}
	g, err := readGraphNames(graph)
	if err != nil {
		return nil, fmt.Errorf("embed: derive model: read graph: %w", err)
	}
	var missing []string
	for _, n := range []string{d.Input, d.Scale, d.ZeroPoint} {
		if !g.defined[n] {
			missing = append(missing, fmt.Sprintf("%q", n))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("embed: derive model: the graph defines no tensor %v (is this the model the spec was written for?)", missing)
	}
	if g.defined[out] || slices.Contains(g.outputs, out) {
		return nil, fmt.Errorf("embed: derive model: the graph already has a tensor %q; name the feature map something else", out)
	}
	nodeName := "lookalike_dequantize_" + out
	if g.nodes[nodeName] {
		return nil, fmt.Errorf("embed: derive model: the graph already has a node %q", nodeName)
	}

	var node []byte
	for _, in := range []string{d.Input, d.Scale, d.ZeroPoint} {
		node = appendString(node, onnxNodeInput, in)
	}
	node = appendString(node, onnxNodeOutput, out)
	node = appendString(node, onnxNodeName, nodeName)
	node = appendString(node, onnxNodeOpType, "DequantizeLinear")

	// The output is declared float32 without a shape: the runtime infers it, and the pooling
	// checks the shape of what each run returns.
	var tensorType []byte
	tensorType = protowire.AppendTag(tensorType, onnxTensorElemType, protowire.VarintType)
	tensorType = protowire.AppendVarint(tensorType, onnxFloat)
	var typ []byte
	typ = appendBytes(typ, onnxTypeTensor, tensorType)
	var info []byte
	info = appendString(info, onnxValueInfoName, out)
	info = appendBytes(info, onnxValueInfoType, typ)

	newGraph := slices.Clip(graph)
	newGraph = appendBytes(newGraph, onnxGraphNode, node)
	newGraph = appendBytes(newGraph, onnxGraphOutput, info)

	derived, err := mapFields(model, onnxModelGraph, func([]byte) ([]byte, error) { return newGraph, nil })
	if err != nil {
		return nil, fmt.Errorf("embed: derive model: %w", err)
	}
	return derived, nil
}

// WithDynamicInputSize returns a copy of an ONNX model whose input named input declares its
// height and width (by layout, LayoutNCHW or LayoutNHWC) as symbolic dimensions instead of
// fixed ones. It exists for multi-view embedding: ONNX Runtime refuses an input whose size
// differs from the declared one, although a convolutional network runs at any size. Like
// AddDequantizedOutput it is deterministic and keeps every other byte; an input that is
// missing or not four-dimensional is refused.
func WithDynamicInputSize(model []byte, input, layout string) ([]byte, error) {
	spatial := map[int]string{2: "lookalike_height", 3: "lookalike_width"}
	if layout == LayoutNHWC {
		spatial = map[int]string{1: "lookalike_height", 2: "lookalike_width"}
	}
	found, dims := false, 0
	shape := func(b []byte) ([]byte, error) {
		var out []byte
		dims = 0
		err := onnxFields(b, func(num protowire.Number, raw, _ []byte) error {
			if num != onnxShapeDim {
				out = append(out, raw...)
				return nil
			}
			if name, ok := spatial[dims]; ok {
				out = appendBytes(out, onnxShapeDim, appendString(nil, onnxDimParam, name))
			} else {
				out = append(out, raw...)
			}
			dims++
			return nil
		})
		return out, err
	}
	tensorType := func(b []byte) ([]byte, error) { return mapFields(b, onnxTensorShape, shape) }
	typ := func(b []byte) ([]byte, error) { return mapFields(b, onnxTypeTensor, tensorType) }
	info := func(b []byte) ([]byte, error) {
		names, err := onnxStrings(b, onnxValueInfoName)
		if err != nil || len(names) != 1 || names[0] != input {
			return b, err
		}
		found = true
		return mapFields(b, onnxValueInfoType, typ)
	}
	graph := func(b []byte) ([]byte, error) { return mapFields(b, onnxGraphInput, info) }
	derived, err := mapFields(model, onnxModelGraph, graph)
	if err != nil {
		return nil, fmt.Errorf("embed: derive model: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("embed: derive model: the graph has no input %q", input)
	}
	if dims != 4 {
		return nil, fmt.Errorf("embed: derive model: input %q has %d dimensions, want 4", input, dims)
	}
	return derived, nil
}

// mapFields returns the message msg with the payload of each length-delimited field num
// replaced by f's result, every other field copied verbatim, in the original order.
func mapFields(msg []byte, num protowire.Number, f func(payload []byte) ([]byte, error)) ([]byte, error) {
	out := make([]byte, 0, len(msg)+16)
	err := onnxFields(msg, func(n protowire.Number, raw, payload []byte) error {
		if n != num || !isBytesField(raw) {
			out = append(out, raw...)
			return nil
		}
		p, err := f(payload)
		if err != nil {
			return err
		}
		out = appendBytes(out, num, p)
		return nil
	})
	return out, err
}

// isBytesField reports whether a field's encoding is length-delimited.
func isBytesField(raw []byte) bool {
	_, typ, n := protowire.ConsumeTag(raw)
	return n > 0 && typ == protowire.BytesType
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}
