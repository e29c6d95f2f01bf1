/* Error-message pieces written as Python writes them (dtype names, shapes, float reprs), so that the operators'
 * errors read as groupnorm.functional's do; and the names every gn_ops_*.h uses.
 * Part of the operator unit: included by gn_torch_ops.cpp only (the kernels behind gn_api.h know nothing of
 * PyTorch). */
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/irange.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>

namespace {
using at::Tensor;
using c10::SymInt;
using std::optional;

std::string dtype_name(c10::ScalarType t) {
    switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kHalf: return "torch.float16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
    }
}

std::string shape_str(c10::SymIntArrayRef s) {
    std::ostringstream o;
    o << "(";
    for (const auto i : c10::irange(s.size())) o << (i ? ", " : "") << s[i];
    o << (s.size() == 1 ? ",)" : ")");
    return o.str();
}

std::string float_repr(double v) { /* Python's repr of a float: shortest round trip, "1.0" not "1" */
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[40];
    for (int p = 1; p <= 17; ++p) {
        std::snprintf(buf, sizeof buf, "%.*g", p, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    std::string s(buf);
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
}

}  // namespace
