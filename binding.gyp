{
  "targets": [
    {
      "target_name": "router_tuning",
      "sources": ["<!@(node scripts/list-sources.js)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "csrc/include",
        "/usr/include/x86_64-linux-gnu/openblas-pthread"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-fno-math-errno", "-ffp-contract=fast", "-Wall", "-Wno-unused-parameter"],
      "cflags": ["-O3", "-fno-math-errno"],
      "libraries": ["-L/usr/lib/x86_64-linux-gnu/openblas-pthread", "-lopenblas", "-lpthread"]
    }
  ]
}
