#include "args.h"

#include <cmath>

namespace rtb {

void throw_error(Napi::Env env, const char* kind, const char* code, const std::string& message) {
  Napi::Error error = std::string(kind) == "TypeError"    ? Napi::TypeError::New(env, message)
                      : std::string(kind) == "RangeError" ? Napi::RangeError::New(env, message)
                                                          : Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  throw error;
}

void check_status(Napi::Env env, rt_status status) {
  if (status == RT_OK) return;
  const char* kind = status == RT_ERR_DTYPE ? "TypeError"
                     : (status == RT_ERR_INDEX || status == RT_ERR_SHAPE || status == RT_ERR_ARG) ? "RangeError"
                                                                                                  : "Error";
  throw_error(env, kind, rt_status_name(status), rt_last_error());
}

int64_t checked_numel(Napi::Env env, const char* op, std::initializer_list<int64_t> sizes) {
  const int64_t limit = int64_t(1) << 53;
  int64_t total = 1;
  for (int64_t s : sizes) {
    if (s < 0) throw_error(env, "RangeError", "RT_ERR_SHAPE", std::string(op) + ": sizes must be >= 0, received " + std::to_string(s));
    if (s != 0 && total > limit / s) throw_error(env, "RangeError", "RT_ERR_SHAPE", std::string(op) + ": tensor size overflows 2^53 elements");
    total *= s;
  }
  return total;
}

Args::Args(const Napi::CallbackInfo& info, const char* op, size_t count) : info_(info), op_(op) {
  if (info.Length() != count)
    throw_error(info.Env(), "TypeError", "RT_ERR_ARG",
                std::string(op) + ": expected " + std::to_string(count) + " arguments, received " +
                    std::to_string(info.Length()));
}

const char* device_name(int device) { return device == kCuda ? "cuda" : "cpu"; }

bool Args::is_null(size_t i) const { return info_[i].IsNull() || info_[i].IsUndefined(); }

Storage* Args::storage(size_t i, const char* name) {
  Napi::Value v = info_[i];
  if (!v.IsExternal())
    throw_error(env(), "TypeError", "RT_ERR_ARG",
                std::string(op_) + ": '" + name + "' expected a tensor handle, received " +
                    (v.IsNull() ? "null" : v.IsUndefined() ? "undefined" : v.IsNumber() ? "a number" : "a non-tensor value"));
  auto* s = v.As<Napi::External<Storage>>().Data();
  if (!s || s->magic != kStorageMagic)
    throw_error(env(), "TypeError", "RT_ERR_ARG", std::string(op_) + ": '" + name + "' is not a router-tuning tensor handle");
  if (!s->data)
    throw_error(env(), "Error", "RT_ERR_DISPOSED", std::string(op_) + ": '" + name + "' was already disposed (freed)");
  if (device_ < 0) {
    device_ = s->device;
    device_arg_ = name;
  } else if (s->device != device_ && !mixed_ok_) {
    throw_error(env(), "Error", "RT_ERR_DEVICE",
                std::string(op_) + ": every tensor must be on one device, but '" + device_arg_ + "' is on " +
                    device_name(device_) + " and '" + name + "' is on " + device_name(s->device) +
                    " (move one with tensor.to(device))");
  }
  return s;
}

void* Args::typed(size_t i, const char* name, int64_t numel, rt_dtype want, bool optional) {
  if (optional && is_null(i)) return nullptr;
  Storage* s = storage(i, name);
  if (s->dtype != want)
    throw_error(env(), "TypeError", "RT_ERR_DTYPE",
                std::string(op_) + ": '" + name + "' expected dtype " + rt_dtype_name(want) + ", received " +
                    rt_dtype_name(s->dtype));
  if (s->numel < numel)
    throw_error(env(), "RangeError", "RT_ERR_SHAPE",
                std::string(op_) + ": '" + name + "' expected at least " + std::to_string(numel) +
                    " elements, received " + std::to_string(s->numel));
  return s->data;
}

float* Args::f32(size_t i, const char* name, int64_t numel) {
  return static_cast<float*>(typed(i, name, numel, RT_F32, false));
}
float* Args::f32_opt(size_t i, const char* name, int64_t numel) {
  return static_cast<float*>(typed(i, name, numel, RT_F32, true));
}
int32_t* Args::i32(size_t i, const char* name, int64_t numel) {
  return static_cast<int32_t*>(typed(i, name, numel, RT_I32, false));
}
int32_t* Args::i32_opt(size_t i, const char* name, int64_t numel) {
  return static_cast<int32_t*>(typed(i, name, numel, RT_I32, true));
}

void* Args::floating(size_t i, const char* name, int64_t numel, rt_dtype* dtype) {
  Storage* s = storage(i, name);
  if (s->dtype != RT_F32 && s->dtype != RT_BF16)
    throw_error(env(), "TypeError", "RT_ERR_DTYPE",
                std::string(op_) + ": '" + name + "' expected dtype float32 or bfloat16, received " +
                    rt_dtype_name(s->dtype));
  if (s->numel < numel)
    throw_error(env(), "RangeError", "RT_ERR_SHAPE",
                std::string(op_) + ": '" + name + "' expected at least " + std::to_string(numel) +
                    " elements, received " + std::to_string(s->numel));
  *dtype = s->dtype;
  return s->data;
}

int64_t Args::int64(size_t i, const char* name, int64_t min, int64_t max) {
  Napi::Value v = info_[i];
  if (!v.IsNumber())
    throw_error(env(), "TypeError", "RT_ERR_ARG", std::string(op_) + ": '" + name + "' expected an integer, received a non-number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d))
    throw_error(env(), "TypeError", "RT_ERR_ARG",
                std::string(op_) + ": '" + name + "' expected an integer, received " + std::to_string(d));
  if (d < static_cast<double>(min) || d > static_cast<double>(max))
    throw_error(env(), "RangeError", "RT_ERR_ARG",
                std::string(op_) + ": '" + name + "' expected an integer in [" + std::to_string(min) + ", " +
                    std::to_string(max) + "], received " + std::to_string(static_cast<long long>(d)));
  return static_cast<int64_t>(d);
}

double Args::number(size_t i, const char* name) {
  Napi::Value v = info_[i];
  if (!v.IsNumber())
    throw_error(env(), "TypeError", "RT_ERR_ARG", std::string(op_) + ": '" + name + "' expected a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (std::isnan(d))
    throw_error(env(), "RangeError", "RT_ERR_ARG", std::string(op_) + ": '" + name + "' expected a number, received NaN");
  return d;
}

bool Args::flag(size_t i, const char* name) {
  Napi::Value v = info_[i];
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
  if (v.IsNumber()) return v.As<Napi::Number>().DoubleValue() != 0.0;
  throw_error(env(), "TypeError", "RT_ERR_ARG", std::string(op_) + ": '" + name + "' expected a boolean");
}

}  // namespace rtb
