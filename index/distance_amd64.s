//go:build amd64 && !purego

#include "textflag.h"

// func dotAVX2(a, b *float32, n int) float32
// Four independent accumulators hide the FMA latency; the 8-wide and scalar tails handle
// dimensions that are not multiples of 32.
TEXT ·dotAVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

dotLoop32:
	CMPQ CX, $32
	JL   dotLoop8
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  dotLoop32

dotLoop8:
	CMPQ CX, $8
	JL   dotReduce
	VMOVUPS (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  dotLoop8

dotReduce:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0

dotScalar:
	CMPQ CX, $0
	JE   dotDone
	VMOVSS (SI), X1
	VFMADD231SS (DI), X1, X0
	ADDQ $4, SI
	ADDQ $4, DI
	DECQ CX
	JMP  dotScalar

dotDone:
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func l2sqAVX2(a, b *float32, n int) float32
TEXT ·l2sqAVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

l2Loop32:
	CMPQ CX, $32
	JL   l2Loop8
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VSUBPS (DI), Y4, Y4
	VSUBPS 32(DI), Y5, Y5
	VSUBPS 64(DI), Y6, Y6
	VSUBPS 96(DI), Y7, Y7
	VFMADD231PS Y4, Y4, Y0
	VFMADD231PS Y5, Y5, Y1
	VFMADD231PS Y6, Y6, Y2
	VFMADD231PS Y7, Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  l2Loop32

l2Loop8:
	CMPQ CX, $8
	JL   l2Reduce
	VMOVUPS (SI), Y4
	VSUBPS (DI), Y4, Y4
	VFMADD231PS Y4, Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  l2Loop8

l2Reduce:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0

l2Scalar:
	CMPQ CX, $0
	JE   l2Done
	VMOVSS (SI), X1
	VSUBSS (DI), X1, X1
	VFMADD231SS X1, X1, X0
	ADDQ $4, SI
	ADDQ $4, DI
	DECQ CX
	JMP  l2Scalar

l2Done:
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotCodesAVX2(w *int16, c *byte, n int) float32
// sum(w[i]*c[i]) for n a multiple of 64: codes are widened to int16 and VPMADDWD multiplies
// and adds pairs into int32 lanes. The caller bounds |w| (weightLimit) so that the four
// accumulators together cannot overflow; the lanes are summed in float32.
TEXT ·dotCodesAVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ c+8(FP), DI
	MOVQ n+16(FP), CX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3

codesLoop:
	CMPQ CX, $64
	JL   codesReduce
	VPMOVZXBW (DI), Y4
	VPMOVZXBW 16(DI), Y5
	VPMOVZXBW 32(DI), Y6
	VPMOVZXBW 48(DI), Y7
	VPMADDWD (SI), Y4, Y4
	VPMADDWD 32(SI), Y5, Y5
	VPMADDWD 64(SI), Y6, Y6
	VPMADDWD 96(SI), Y7, Y7
	VPADDD Y4, Y0, Y0
	VPADDD Y5, Y1, Y1
	VPADDD Y6, Y2, Y2
	VPADDD Y7, Y3, Y3
	ADDQ $64, DI
	ADDQ $128, SI
	SUBQ $64, CX
	JMP  codesLoop

codesReduce:
	VPADDD Y1, Y0, Y0
	VPADDD Y3, Y2, Y2
	VPADDD Y2, Y0, Y0
	VCVTDQ2PS Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func nodeWeightsAVX2(dst *int16, c *byte, a, b *float32, n int)
// dst[i] = round(a[i] + b[i]*c[i]) for n a multiple of 16, rounding to nearest even.
TEXT ·nodeWeightsAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ c+8(FP), SI
	MOVQ a+16(FP), R8
	MOVQ b+24(FP), R9
	MOVQ n+32(FP), CX

nwLoop:
	CMPQ CX, $16
	JL   nwDone
	VPMOVZXBD (SI), Y0
	VPMOVZXBD 8(SI), Y1
	VCVTDQ2PS Y0, Y0
	VCVTDQ2PS Y1, Y1
	VMULPS (R9), Y0, Y0
	VMULPS 32(R9), Y1, Y1
	VADDPS (R8), Y0, Y0
	VADDPS 32(R8), Y1, Y1
	VCVTPS2DQ Y0, Y0
	VCVTPS2DQ Y1, Y1
	VPACKSSDW Y1, Y0, Y0
	VPERMQ $0xD8, Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ $16, SI
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $32, DI
	SUBQ $16, CX
	JMP  nwLoop

nwDone:
	VZEROUPPER
	RET

// func prefetchBatch(ptrs *unsafe.Pointer, n, lines int)
// Issues PREFETCHT0 for the first lines cache lines at each of the n addresses, line by line
// across all addresses, so that every element's first line is requested before any second
// one: the distance loop reads the elements in order. PREFETCHT0 is baseline x86-64.
TEXT ·prefetchBatch(SB), NOSPLIT, $0-24
	MOVQ ptrs+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ lines+16(FP), DX
	SHLQ $6, DX
	XORQ R8, R8

pfLine:
	CMPQ R8, DX
	JGE  pfDone
	MOVQ SI, R9
	MOVQ CX, R10

pfAddr:
	TESTQ R10, R10
	JE    pfNext
	MOVQ  (R9), AX
	PREFETCHT0 (AX)(R8*1)
	ADDQ  $8, R9
	DECQ  R10
	JMP   pfAddr

pfNext:
	ADDQ $64, R8
	JMP  pfLine

pfDone:
	RET

// func maxAbsProdAVX2(x, s *float32, n int) float32
// max |x[i]*s[i]| for n a multiple of 8.
TEXT ·maxAbsProdAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ s+8(FP), DI
	MOVQ n+16(FP), CX
	VPCMPEQD Y15, Y15, Y15
	VPSRLD $1, Y15, Y15
	VXORPS Y0, Y0, Y0

mapLoop:
	CMPQ CX, $8
	JL   mapReduce
	VMOVUPS (SI), Y1
	VMULPS (DI), Y1, Y1
	VANDPS Y15, Y1, Y1
	VMAXPS Y1, Y0, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  mapLoop

mapReduce:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4E, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xB1, X0, X1
	VMAXPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func queryWeightsAVX2(dst *int16, x, s *float32, inv float32, n int)
// dst[i] = round(x[i]*s[i]*inv) for n a multiple of 16, rounding to nearest even.
TEXT ·queryWeightsAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ s+16(FP), R8
	VBROADCASTSS inv+24(FP), Y15
	MOVQ n+32(FP), CX

qwLoop:
	CMPQ CX, $16
	JL   qwDone
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMULPS (R8), Y0, Y0
	VMULPS 32(R8), Y1, Y1
	VMULPS Y15, Y0, Y0
	VMULPS Y15, Y1, Y1
	VCVTPS2DQ Y0, Y0
	VCVTPS2DQ Y1, Y1
	VPACKSSDW Y1, Y0, Y0
	VPERMQ $0xD8, Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ $64, SI
	ADDQ $64, R8
	ADDQ $32, DI
	SUBQ $16, CX
	JMP  qwLoop

qwDone:
	VZEROUPPER
	RET
